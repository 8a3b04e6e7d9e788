//! Avatar motion for a virtual host: VMC (the Virtual Motion Capture
//! protocol, OSC messages over UDP, port 39539 by convention, or the same
//! packets over a WebSocket) from a performer's tracking app, folded into
//! the latest pose and sampled for viewers at most [`MAX_RELAY_HZ`] times a
//! second, whatever rate the sender uses.
//!
//! What counts ([VMC spec](https://protocol.vmc.info/english)):
//!
//! | address                | arguments                                   |
//! |------------------------|---------------------------------------------|
//! | `/VMC/Ext/Root/Pos`    | name, px py pz, qx qy qz qw (+ optional)    |
//! | `/VMC/Ext/Bone/Pos`    | bone name, px py pz, qx qy qz qw            |
//! | `/VMC/Ext/Blend/Val`   | blendshape name, value (held until Apply)   |
//! | `/VMC/Ext/Blend/Apply` | (none): held blendshape values take effect  |
//!
//! Everything else (other VMC addresses such as `/VMC/Ext/OK`, `/VMC/Ext/T`,
//! other OSC) is ignored; what cannot be read at all (not OSC, wrong
//! arguments, bundles nested deeper than a sender would) is refused with a
//! reason, counted by the caller, and changes nothing.

use std::collections::BTreeMap;

use rosc::{OscMessage, OscPacket, OscType};

/// The most pose frames a second relayed to viewers.
pub const MAX_RELAY_HZ: u64 = 60;
/// The shortest gap between frames (rounded up: never above the rate).
const FRAME_GAP_MS: u64 = 1000_u64.div_ceil(MAX_RELAY_HZ);
/// A full pose goes out at least this often, so a viewer who joins (or
/// missed a frame) converges; frames in between carry what changed.
pub const FULL_POSE_EVERY_MS: u64 = 1_000;
/// OSC bundles may nest; VMC senders use one level.
const MAX_BUNDLE_DEPTH: usize = 4;
/// A UDP datagram's most.
pub const MAX_PACKET_BYTES: usize = 65_507;

/// Position and rotation: px, py, pz, qx, qy, qz, qw.
pub type Transform = [f32; 7];

/// A pose frame for viewers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoseFrame {
    /// Every bone and blendshape (`true`), or those changed since the last
    /// frame.
    pub full: bool,
    pub root: Option<Transform>,
    pub bones: Vec<(String, Transform)>,
    pub blendshapes: Vec<(String, f32)>,
}

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmcError {
    TooLarge,
    NotOsc,
    TooDeep,
    /// A VMC address with arguments it does not take.
    BadArguments(&'static str),
}

impl VmcError {
    /// A metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            VmcError::TooLarge => "too_large",
            VmcError::NotOsc => "not_osc",
            VmcError::TooDeep => "too_deep",
            VmcError::BadArguments(_) => "bad_arguments",
        }
    }
}

/// What one packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Messages that changed the pose (or held blendshape values).
    pub used: usize,
    /// Messages of other addresses.
    pub ignored: usize,
}

#[derive(Default)]
pub struct MotionIngest {
    root: Option<Transform>,
    bones: BTreeMap<String, Transform>,
    blendshapes: BTreeMap<String, f32>,
    /// `/VMC/Ext/Blend/Val` values waiting for `/VMC/Ext/Blend/Apply`.
    held: BTreeMap<String, f32>,
    changed_root: bool,
    changed_bones: Vec<String>,
    changed_blends: Vec<String>,
    last_frame_ms: Option<u64>,
    last_full_ms: Option<u64>,
}

impl MotionIngest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one OSC packet (a message or a bundle). A packet with one bad
    /// message is refused whole: nothing of it is applied.
    pub fn packet(&mut self, bytes: &[u8]) -> Result<Applied, VmcError> {
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(VmcError::TooLarge);
        }
        if !depth_within(bytes, MAX_BUNDLE_DEPTH) {
            return Err(VmcError::TooDeep);
        }
        let (_, packet) = rosc::decoder::decode_udp(bytes).map_err(|_| VmcError::NotOsc)?;
        let mut messages = Vec::new();
        flatten(packet, &mut messages);
        let updates: Vec<Update> = messages.iter().map(read).collect::<Result<_, _>>()?;
        let mut applied = Applied::default();
        for update in updates {
            match update {
                Update::Ignored => applied.ignored += 1,
                update => {
                    self.apply(update);
                    applied.used += 1;
                }
            }
        }
        Ok(applied)
    }

    fn apply(&mut self, update: Update) {
        match update {
            Update::Root(transform) => {
                self.changed_root |= self.root != Some(transform);
                self.root = Some(transform);
            }
            Update::Bone(name, transform) => {
                if self.bones.get(&name) != Some(&transform) {
                    self.bones.insert(name.clone(), transform);
                    self.changed_bones.push(name);
                }
            }
            Update::Blend(name, value) => {
                self.held.insert(name, value);
            }
            Update::Apply => {
                for (name, value) in std::mem::take(&mut self.held) {
                    if self.blendshapes.get(&name) != Some(&value) {
                        self.blendshapes.insert(name.clone(), value);
                        self.changed_blends.push(name);
                    }
                }
            }
            Update::Ignored => {}
        }
    }

    /// When [`Self::poll`] may next return a frame.
    pub fn next_frame_ms(&self) -> Option<u64> {
        if !self.has_changes() {
            return None;
        }
        Some(self.last_frame_ms.map_or(0, |at| at + FRAME_GAP_MS))
    }

    fn has_changes(&self) -> bool {
        self.changed_root || !self.changed_bones.is_empty() || !self.changed_blends.is_empty()
    }

    /// A frame when something changed and the rate allows: the changes,
    /// or the whole pose once a second.
    pub fn poll(&mut self, now_ms: u64) -> Option<PoseFrame> {
        if !self.has_changes() || self.next_frame_ms().is_some_and(|at| now_ms < at) {
            return None;
        }
        let full = self
            .last_full_ms
            .is_none_or(|at| now_ms >= at + FULL_POSE_EVERY_MS);
        let mut bones: Vec<String> = if full {
            self.bones.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.changed_bones)
        };
        bones.sort();
        bones.dedup();
        let mut blends: Vec<String> = if full {
            self.blendshapes.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.changed_blends)
        };
        blends.sort();
        blends.dedup();
        let frame = PoseFrame {
            full,
            root: (full || self.changed_root).then_some(self.root).flatten(),
            bones: bones
                .into_iter()
                .filter_map(|name| self.bones.get(&name).map(|t| (name, *t)))
                .collect(),
            blendshapes: blends
                .into_iter()
                .filter_map(|name| self.blendshapes.get(&name).map(|v| (name, *v)))
                .collect(),
        };
        self.changed_root = false;
        self.changed_bones.clear();
        self.changed_blends.clear();
        self.last_frame_ms = Some(now_ms);
        if full {
            self.last_full_ms = Some(now_ms);
        }
        Some(frame)
    }
}

enum Update {
    Root(Transform),
    Bone(String, Transform),
    Blend(String, f32),
    Apply,
    Ignored,
}

fn flatten(packet: OscPacket, out: &mut Vec<OscMessage>) {
    match packet {
        OscPacket::Message(message) => out.push(message),
        OscPacket::Bundle(bundle) => {
            for inner in bundle.content {
                flatten(inner, out);
            }
        }
    }
}

fn read(message: &OscMessage) -> Result<Update, VmcError> {
    let args = message.args.as_slice();
    match message.addr.as_str() {
        "/VMC/Ext/Root/Pos" => Ok(Update::Root(
            transform(args)
                .ok_or(VmcError::BadArguments("/VMC/Ext/Root/Pos"))?
                .1,
        )),
        "/VMC/Ext/Bone/Pos" => {
            let (name, t) = transform(args).ok_or(VmcError::BadArguments("/VMC/Ext/Bone/Pos"))?;
            Ok(Update::Bone(name, t))
        }
        "/VMC/Ext/Blend/Val" => match args {
            [OscType::String(name), OscType::Float(value)] if value.is_finite() => {
                Ok(Update::Blend(name.clone(), *value))
            }
            _ => Err(VmcError::BadArguments("/VMC/Ext/Blend/Val")),
        },
        "/VMC/Ext/Blend/Apply" => Ok(Update::Apply),
        _ => Ok(Update::Ignored),
    }
}

/// A name and seven finite floats (more arguments, such as the root's
/// scale and offset in VMC 2.1, are allowed and unused).
fn transform(args: &[OscType]) -> Option<(String, Transform)> {
    let [OscType::String(name), rest @ ..] = args else {
        return None;
    };
    if rest.len() < 7 || name.is_empty() || name.len() > 64 {
        return None;
    }
    let mut t = [0f32; 7];
    for (slot, arg) in t.iter_mut().zip(rest) {
        match arg {
            OscType::Float(v) if v.is_finite() => *slot = *v,
            _ => return None,
        }
    }
    Some((name.clone(), t))
}

/// Whether OSC bundles in `bytes` nest at most `depth` deep (checked
/// before decoding, so a crafted packet cannot recurse the decoder deep).
fn depth_within(bytes: &[u8], depth: usize) -> bool {
    const BUNDLE: &[u8] = b"#bundle\0";
    if !bytes.starts_with(BUNDLE) {
        return true;
    }
    if depth == 0 {
        return false;
    }
    // "#bundle\0", an 8-byte time tag, then elements: a big-endian i32
    // size and that many bytes.
    let mut rest = bytes.get(16..).unwrap_or_default();
    while rest.len() >= 4 {
        let size = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let Ok(size) = usize::try_from(size) else {
            return true; // the decoder refuses it
        };
        let Some(element) = rest.get(4..4 + size) else {
            return true;
        };
        if !depth_within(element, depth - 1) {
            return false;
        }
        rest = &rest[4 + size..];
    }
    true
}

#[cfg(test)]
mod tests {
    use rosc::{OscBundle, OscTime};

    use super::*;

    fn message(addr: &str, args: Vec<OscType>) -> OscPacket {
        OscPacket::Message(OscMessage {
            addr: addr.into(),
            args,
        })
    }

    fn bone(name: &str, x: f32) -> OscPacket {
        let mut args = vec![OscType::String(name.into())];
        args.extend([x, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0].map(OscType::Float));
        message("/VMC/Ext/Bone/Pos", args)
    }

    fn bundle(content: Vec<OscPacket>) -> OscPacket {
        OscPacket::Bundle(OscBundle {
            timetag: OscTime::from((0, 1)),
            content,
        })
    }

    fn bytes(packet: &OscPacket) -> Vec<u8> {
        rosc::encoder::encode(packet).unwrap()
    }

    #[test]
    fn bones_and_applied_blendshapes_make_the_pose() {
        let mut ingest = MotionIngest::new();
        let packet = bundle(vec![
            bone("Hips", 0.5),
            bone("Head", 1.5),
            message(
                "/VMC/Ext/Blend/Val",
                vec![OscType::String("Joy".into()), OscType::Float(0.8)],
            ),
            message("/VMC/Ext/OK", vec![OscType::Int(1)]),
        ]);
        assert_eq!(
            ingest.packet(&bytes(&packet)),
            Ok(Applied {
                used: 3,
                ignored: 1
            })
        );
        let frame = ingest.poll(0).unwrap();
        assert!(frame.full);
        assert_eq!(frame.bones.len(), 2);
        assert!(frame.blendshapes.is_empty(), "held until Apply");
        ingest
            .packet(&bytes(&message("/VMC/Ext/Blend/Apply", vec![])))
            .unwrap();
        let frame = ingest.poll(20).unwrap();
        assert!(!frame.full);
        assert_eq!(frame.blendshapes, [("Joy".to_owned(), 0.8)]);
        assert!(frame.bones.is_empty(), "only what changed");
    }

    #[test]
    fn frames_go_out_at_most_sixty_times_a_second() {
        let mut ingest = MotionIngest::new();
        let mut frames = 0;
        // A sender at 200 packets a second for one second; the relay
        // looks every millisecond.
        for now in 0..1000u64 {
            if now % 5 == 0 {
                ingest.packet(&bytes(&bone("Hips", now as f32))).unwrap();
            }
            if ingest.next_frame_ms().is_some_and(|at| at <= now) && ingest.poll(now).is_some() {
                frames += 1;
            }
        }
        assert!((55..=60).contains(&frames), "{frames} frames");
        assert!(ingest.poll(10_000).is_some(), "the last pose is not lost");
        assert!(ingest.poll(20_000).is_none(), "nothing new, nothing sent");
    }

    #[test]
    fn garbage_is_refused_and_changes_nothing() {
        let mut ingest = MotionIngest::new();
        assert_eq!(ingest.packet(b"hello, not osc"), Err(VmcError::NotOsc));
        assert_eq!(ingest.packet(&[]), Err(VmcError::NotOsc));
        let short = message(
            "/VMC/Ext/Bone/Pos",
            vec![OscType::String("Hips".into()), OscType::Float(1.0)],
        );
        let mixed = bundle(vec![bone("Head", 1.0), short]);
        assert_eq!(
            ingest.packet(&bytes(&mixed)),
            Err(VmcError::BadArguments("/VMC/Ext/Bone/Pos"))
        );
        let nan = message(
            "/VMC/Ext/Blend/Val",
            vec![OscType::String("Joy".into()), OscType::Float(f32::NAN)],
        );
        assert!(ingest.packet(&bytes(&nan)).is_err());
        let mut deep = bone("Hips", 1.0);
        for _ in 0..10 {
            deep = bundle(vec![deep]);
        }
        assert_eq!(ingest.packet(&bytes(&deep)), Err(VmcError::TooDeep));
        assert_eq!(
            ingest.packet(&vec![0u8; MAX_PACKET_BYTES + 1]),
            Err(VmcError::TooLarge)
        );
        assert_eq!(ingest.poll(0), None, "nothing was applied");
        assert_eq!(
            ingest.packet(&bytes(&message("/other/osc", vec![OscType::Int(3)]))),
            Ok(Applied {
                used: 0,
                ignored: 1
            })
        );
    }

    #[test]
    fn a_full_pose_goes_out_every_second() {
        let mut ingest = MotionIngest::new();
        ingest
            .packet(&bytes(&bundle(vec![bone("Hips", 0.0), bone("Head", 0.0)])))
            .unwrap();
        assert!(ingest.poll(0).unwrap().full);
        ingest.packet(&bytes(&bone("Head", 1.0))).unwrap();
        let delta = ingest.poll(100).unwrap();
        assert_eq!((delta.full, delta.bones.len()), (false, 1));
        ingest.packet(&bytes(&bone("Head", 2.0))).unwrap();
        let full = ingest.poll(1_000).unwrap();
        assert_eq!((full.full, full.bones.len()), (true, 2));
    }
}
