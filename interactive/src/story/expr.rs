//! Conditions and effects of a story graph, as authors write them:
//!
//! ```text
//! condition:  hype >= 10 && !revealed          effect:  hype += 5
//!             visits(intro) > 1 or vip                  revealed = true
//!             not (score < 3)                           lives -= 1
//! ```
//!
//! Values are integers (`i64`) or booleans. Comparisons `== != < <= > >=`
//! (ordering only between integers), `&&`/`and`, `||`/`or`, `!`/`not`,
//! parentheses, `true`/`false`, variables, and `visits(<node id>)`: how
//! many times that node was entered. No arithmetic in conditions; effects
//! set (`=`) or add (`+=`, `-=`, integers only).
//!
//! Parsing happens once, when a graph is uploaded, and [`Expr::check`]
//! types every expression against the graph's variables and nodes, so a
//! validated graph cannot fail to evaluate: [`Expr::eval`] never errs.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A variable's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
}

impl Value {
    fn kind(self) -> Kind {
        match self {
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
        }
    }
}

/// A value's type, for checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Bool => "a boolean",
            Kind::Int => "an integer",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Var(String),
    Visits(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
}

/// A parsed effect.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Set(String, Value),
    Add(String, i64),
}

/// Where a condition or effect stops making sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset in the source.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at + 1)
    }
}

/// What expressions read while running: variables and visit counts.
pub trait Scope {
    fn var(&self, name: &str) -> Option<Value>;
    fn visits(&self, node: &str) -> u32;
}

/// What expressions may name, for checking.
pub struct Names<'a> {
    pub variables: &'a BTreeMap<String, Value>,
    pub nodes: &'a HashSet<&'a str>,
}

pub fn parse_condition(source: &str) -> Result<Expr, SyntaxError> {
    let mut parser = Parser::new(source)?;
    let expr = parser.or()?;
    parser.expect_end()?;
    Ok(expr)
}

pub fn parse_effect(source: &str) -> Result<Effect, SyntaxError> {
    let mut parser = Parser::new(source)?;
    let name = match parser.next() {
        Some((_, Token::Ident(name))) => name,
        other => return Err(parser.unexpected(other, "a variable name")),
    };
    let effect = match parser.next() {
        Some((_, Token::Assign)) => Effect::Set(name, parser.literal()?),
        Some((at, Token::AddAssign | Token::SubAssign)) => {
            let negate = parser.tokens[parser.pos - 1].1 == Token::SubAssign;
            match parser.literal()? {
                Value::Int(n) => Effect::Add(name, if negate { n.saturating_neg() } else { n }),
                Value::Bool(_) => {
                    return Err(SyntaxError {
                        at,
                        message: "only integers can be added to".into(),
                    });
                }
            }
        }
        other => return Err(parser.unexpected(other, "`=`, `+=` or `-=`")),
    };
    parser.expect_end()?;
    Ok(effect)
}

impl Expr {
    /// The expression's type, or what is wrong with it.
    pub fn check(&self, names: &Names<'_>) -> Result<Kind, String> {
        match self {
            Expr::Literal(value) => Ok(value.kind()),
            Expr::Var(name) => names
                .variables
                .get(name)
                .map(|v| v.kind())
                .ok_or_else(|| format!("unknown variable `{name}`")),
            Expr::Visits(node) => {
                if names.nodes.contains(node.as_str()) {
                    Ok(Kind::Int)
                } else {
                    Err(format!("visits() of unknown node `{node}`"))
                }
            }
            Expr::Not(inner) => expect(inner, Kind::Bool, names, "`not`").map(|_| Kind::Bool),
            Expr::And(a, b) | Expr::Or(a, b) => {
                expect(a, Kind::Bool, names, "`and`/`or`")?;
                expect(b, Kind::Bool, names, "`and`/`or`")?;
                Ok(Kind::Bool)
            }
            Expr::Compare(cmp, a, b) => {
                let (left, right) = (a.check(names)?, b.check(names)?);
                if left != right {
                    return Err(format!("cannot compare {left} with {right}"));
                }
                if left == Kind::Bool && !matches!(cmp, Cmp::Eq | Cmp::Ne) {
                    return Err("booleans can only be compared with == or !=".into());
                }
                Ok(Kind::Bool)
            }
        }
    }

    /// The value in `scope`. A checked expression always has one; an
    /// unchecked one that names something missing reads it as `false`/0.
    pub fn eval(&self, scope: &impl Scope) -> Value {
        match self {
            Expr::Literal(value) => *value,
            Expr::Var(name) => scope.var(name).unwrap_or(Value::Bool(false)),
            Expr::Visits(node) => Value::Int(i64::from(scope.visits(node))),
            Expr::Not(inner) => Value::Bool(!inner.holds(scope)),
            Expr::And(a, b) => Value::Bool(a.holds(scope) && b.holds(scope)),
            Expr::Or(a, b) => Value::Bool(a.holds(scope) || b.holds(scope)),
            Expr::Compare(cmp, a, b) => {
                let (a, b) = (a.eval(scope), b.eval(scope));
                Value::Bool(match (a, b) {
                    (Value::Int(a), Value::Int(b)) => match cmp {
                        Cmp::Eq => a == b,
                        Cmp::Ne => a != b,
                        Cmp::Lt => a < b,
                        Cmp::Le => a <= b,
                        Cmp::Gt => a > b,
                        Cmp::Ge => a >= b,
                    },
                    (a, b) => match cmp {
                        Cmp::Eq => a == b,
                        Cmp::Ne => a != b,
                        _ => false,
                    },
                })
            }
        }
    }

    /// Whether a condition holds.
    pub fn holds(&self, scope: &impl Scope) -> bool {
        self.eval(scope) == Value::Bool(true)
    }
}

fn expect(expr: &Expr, kind: Kind, names: &Names<'_>, context: &str) -> Result<(), String> {
    let found = expr.check(names)?;
    if found == kind {
        Ok(())
    } else {
        Err(format!("{context} needs {kind}, found {found}"))
    }
}

impl Effect {
    pub fn variable(&self) -> &str {
        match self {
            Effect::Set(name, _) | Effect::Add(name, _) => name,
        }
    }

    /// What is wrong with the effect against the graph's variables.
    pub fn check(&self, variables: &BTreeMap<String, Value>) -> Result<(), String> {
        let name = self.variable();
        let current = variables
            .get(name)
            .ok_or_else(|| format!("unknown variable `{name}`"))?;
        match self {
            Effect::Set(_, value) if value.kind() != current.kind() => Err(format!(
                "`{name}` is {}, cannot be set to {}",
                current.kind(),
                value.kind()
            )),
            Effect::Add(..) if current.kind() != Kind::Int => Err(format!(
                "`{name}` is {}, cannot be added to",
                current.kind()
            )),
            _ => Ok(()),
        }
    }

    /// Applies the effect (integers saturate rather than wrap).
    pub fn apply(&self, variables: &mut BTreeMap<String, Value>) {
        match self {
            Effect::Set(name, value) => {
                variables.insert(name.clone(), *value);
            }
            Effect::Add(name, by) => {
                if let Some(Value::Int(n)) = variables.get_mut(name) {
                    *n = n.saturating_add(*by);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(Cmp),
    Assign,
    AddAssign,
    SubAssign,
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn new(source: &str) -> Result<Self, SyntaxError> {
        Ok(Self {
            tokens: tokenize(source)?,
            pos: 0,
            len: source.len(),
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self) -> Option<(usize, Token)> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(token.is_some());
        token
    }

    fn unexpected(&self, found: Option<(usize, Token)>, wanted: &str) -> SyntaxError {
        match found {
            Some((at, token)) => SyntaxError {
                at,
                message: format!("expected {wanted}, found {}", describe(&token)),
            },
            None => SyntaxError {
                at: self.len,
                message: format!("expected {wanted}, found the end"),
            },
        }
    }

    fn expect_end(&mut self) -> Result<(), SyntaxError> {
        match self.next() {
            None => Ok(()),
            found => Err(self.unexpected(found, "the end")),
        }
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let left = self.primary()?;
        if let Some(Token::Cmp(cmp)) = self.peek() {
            let cmp = *cmp;
            self.pos += 1;
            let right = self.primary()?;
            return Ok(Expr::Compare(cmp, Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        match self.next() {
            Some((_, Token::Int(n))) => Ok(Expr::Literal(Value::Int(n))),
            Some((_, Token::LParen)) => {
                let inner = self.or()?;
                match self.next() {
                    Some((_, Token::RParen)) => Ok(inner),
                    found => Err(self.unexpected(found, "`)`")),
                }
            }
            Some((_, Token::Ident(name))) => match name.as_str() {
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                "visits" if self.peek() == Some(&Token::LParen) => {
                    self.pos += 1;
                    let node = match self.next() {
                        Some((_, Token::Ident(node))) => node,
                        found => return Err(self.unexpected(found, "a node id")),
                    };
                    match self.next() {
                        Some((_, Token::RParen)) => Ok(Expr::Visits(node)),
                        found => Err(self.unexpected(found, "`)`")),
                    }
                }
                _ => Ok(Expr::Var(name)),
            },
            found => Err(self.unexpected(found, "a value, a variable or `(`")),
        }
    }

    /// An effect's right-hand side: a literal.
    fn literal(&mut self) -> Result<Value, SyntaxError> {
        match self.next() {
            Some((_, Token::Int(n))) => Ok(Value::Int(n)),
            Some((_, Token::Ident(word))) if word == "true" => Ok(Value::Bool(true)),
            Some((_, Token::Ident(word))) if word == "false" => Ok(Value::Bool(false)),
            found => Err(self.unexpected(found, "a number, `true` or `false`")),
        }
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("`{name}`"),
        Token::Int(n) => format!("`{n}`"),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
        Token::Not => "`not`".into(),
        Token::And => "`and`".into(),
        Token::Or => "`or`".into(),
        Token::Cmp(_) => "a comparison".into(),
        Token::Assign => "`=`".into(),
        Token::AddAssign => "`+=`".into(),
        Token::SubAssign => "`-=`".into(),
    }
}

fn tokenize(source: &str) -> Result<Vec<(usize, Token)>, SyntaxError> {
    let bytes = source.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = bytes.get(i..i + 2).unwrap_or_default();
        let (token, width) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            _ if two == b"&&" => (Token::And, 2),
            _ if two == b"||" => (Token::Or, 2),
            _ if two == b"==" => (Token::Cmp(Cmp::Eq), 2),
            _ if two == b"!=" => (Token::Cmp(Cmp::Ne), 2),
            _ if two == b"<=" => (Token::Cmp(Cmp::Le), 2),
            _ if two == b">=" => (Token::Cmp(Cmp::Ge), 2),
            _ if two == b"+=" => (Token::AddAssign, 2),
            _ if two == b"-=" => (Token::SubAssign, 2),
            b'<' => (Token::Cmp(Cmp::Lt), 1),
            b'>' => (Token::Cmp(Cmp::Gt), 1),
            b'!' => (Token::Not, 1),
            b'=' => (Token::Assign, 1),
            b'0'..=b'9' | b'-' => {
                let end = i + 1 + digits(&bytes[i + 1..]);
                let text = &source[i..end];
                let n = text.parse::<i64>().map_err(|_| SyntaxError {
                    at: i,
                    message: format!("`{text}` is not an integer in range"),
                })?;
                (Token::Int(n), end - i)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = i + bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                    .count();
                let word = &source[i..end];
                let token = match word {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    _ => Token::Ident(word.to_owned()),
                };
                (token, end - i)
            }
            _ => {
                let ch = source[i..].chars().next().unwrap_or('?');
                return Err(SyntaxError {
                    at: i,
                    message: format!("unexpected `{ch}`"),
                });
            }
        };
        tokens.push((i, token));
        i += width;
    }
    Ok(tokens)
}

fn digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(BTreeMap<String, Value>, u32);

    impl Scope for Env {
        fn var(&self, name: &str) -> Option<Value> {
            self.0.get(name).copied()
        }
        fn visits(&self, node: &str) -> u32 {
            if node == "intro" { self.1 } else { 0 }
        }
    }

    fn env() -> Env {
        let vars = [
            ("hype", Value::Int(12)),
            ("revealed", Value::Bool(false)),
            ("score", Value::Int(-3)),
        ];
        Env(vars.map(|(k, v)| (k.to_owned(), v)).into(), 2)
    }

    fn holds(source: &str) -> bool {
        parse_condition(source).unwrap().holds(&env())
    }

    #[test]
    fn conditions_compare_combine_and_negate() {
        assert!(holds("hype >= 10"));
        assert!(!holds("hype < 10"));
        assert!(holds("hype >= 10 && !revealed"));
        assert!(holds("hype > 100 or not revealed"));
        assert!(!holds("hype > 100 || revealed"));
        assert!(holds("score == -3 and score != 3"));
        assert!(holds("visits(intro) > 1"));
        assert!(!holds("visits(outro) > 0"));
        assert!(holds("revealed == false"));
        assert!(holds("not (hype < 3 or revealed)"));
        assert!(holds("true"));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // false || (true && true), not (false || true) && false.
        assert!(holds("revealed || hype > 1 && score < 0"));
        assert!(!holds("(revealed || hype > 1) && score > 0"));
    }

    #[test]
    fn syntax_errors_say_where() {
        let error = parse_condition("hype >= ").unwrap_err();
        assert_eq!(error.at, 8);
        assert!(error.message.contains("found the end"), "{error}");
        let error = parse_condition("hype >= 10 &&& x").unwrap_err();
        assert!(error.message.contains("unexpected `&`"), "{error}");
        assert!(
            parse_condition("(hype > 1")
                .unwrap_err()
                .message
                .contains("`)`")
        );
        assert!(parse_condition("hype 10").is_err());
        assert!(parse_condition("").is_err());
        assert!(parse_condition("99999999999999999999 > 1").is_err());
        assert!(parse_condition("hype £ 3").is_err());
    }

    #[test]
    fn checking_finds_unknown_names_and_type_mismatches() {
        let variables: BTreeMap<String, Value> = env().0;
        let nodes: HashSet<&str> = ["intro"].into();
        let names = Names {
            variables: &variables,
            nodes: &nodes,
        };
        let check = |s: &str| parse_condition(s).unwrap().check(&names);
        assert_eq!(check("hype > 1 && !revealed"), Ok(Kind::Bool));
        assert_eq!(
            check("hype").unwrap(),
            Kind::Int,
            "a bare integer is not a condition on its own: the graph checks for Bool"
        );
        assert!(
            check("mood > 1")
                .unwrap_err()
                .contains("unknown variable `mood`")
        );
        assert!(
            check("visits(nowhere) > 0")
                .unwrap_err()
                .contains("unknown node")
        );
        assert!(
            check("revealed > 1")
                .unwrap_err()
                .contains("cannot compare")
        );
        assert!(
            check("revealed < false")
                .unwrap_err()
                .contains("only be compared")
        );
        assert!(check("!hype").unwrap_err().contains("needs a boolean"));
        assert!(
            check("hype && revealed")
                .unwrap_err()
                .contains("needs a boolean")
        );
    }

    #[test]
    fn effects_set_and_add_checked_against_variables() {
        let mut variables = env().0;
        for source in ["hype += 5", "score -= 2", "revealed = true"] {
            let effect = parse_effect(source).unwrap();
            effect.check(&variables).unwrap();
            effect.apply(&mut variables);
        }
        assert_eq!(variables["hype"], Value::Int(17));
        assert_eq!(variables["score"], Value::Int(-5));
        assert_eq!(variables["revealed"], Value::Bool(true));
        let overflow = parse_effect(&format!("hype += {}", i64::MAX)).unwrap();
        overflow.apply(&mut variables);
        assert_eq!(variables["hype"], Value::Int(i64::MAX), "saturates");

        assert!(parse_effect("revealed += true").is_err());
        assert!(parse_effect("hype").is_err());
        assert!(parse_effect("hype = ").is_err());
        assert!(parse_effect("= 3").is_err());
        let checked = |s: &str| parse_effect(s).unwrap().check(&variables);
        assert!(
            checked("revealed += 1")
                .unwrap_err()
                .contains("cannot be added")
        );
        assert!(
            checked("hype = false")
                .unwrap_err()
                .contains("cannot be set")
        );
        assert!(
            checked("mood = 1")
                .unwrap_err()
                .contains("unknown variable")
        );
    }
}
