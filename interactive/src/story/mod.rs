//! Audience-driven branching: story graphs for interactive drama and
//! virtual hosts, and the runtime that walks one in a room.
//!
//! | module      | owns                                                               |
//! |-------------|--------------------------------------------------------------------|
//! | [`expr`]    | conditions (`hype >= 10 && !revealed`) and effects (`hype += 5`)    |
//! | [`graph`]   | the uploaded JSON ([`GraphSpec`]), validation into a [`StoryGraph`] |
//! | [`faq`]     | the virtual host's answers to questions in the chat             |
//! | [`runtime`] | one run: windows, ballots, tie-breaks, events ([`StoryRuntime`])    |
//!
//! The schema and the rules are written down for authors in docs/story.md.

pub mod expr;
pub mod faq;
pub mod graph;
pub mod runtime;

pub use expr::Value;
pub use graph::{GraphSpec, Problem, Scene, StoryGraph};
pub use runtime::{
    Decision, OperatorError, StoryEvent, StoryRuntime, StoryState, TieBreak, VoteError, VoteReceipt,
};

#[cfg(test)]
mod tests;
