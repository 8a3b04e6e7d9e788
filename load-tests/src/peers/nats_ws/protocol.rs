//! The NATS text protocol, as much of it as a fan-out client speaks:
//! parsing what the server sends (INFO, MSG, PING, PONG, +OK, -ERR), in
//! items that may span WebSocket messages, and framing what a client says
//! (CONNECT, SUB, PING; PUB).

use std::fmt::Write as _;

/// One item the server sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event<'a> {
    Info,
    Msg(&'a [u8]),
    Ping,
    Pong,
    Ok,
    /// `-ERR 'text'`, without the quotes.
    Err(&'a str),
}

/// nats-server's default `max_control_line`.
const MAX_CONTROL_LINE: usize = 4096;
/// Largest MSG payload a client accepts. Ours are ~150 bytes, so a larger
/// size means the stream is out of step, and buffering it would let one
/// bad frame grow a viewer without bound.
const MAX_MSG_PAYLOAD: usize = 1 << 20;

/// Reassembles protocol items across WebSocket messages: one message may
/// carry several items, or part of one.
#[derive(Default)]
pub(super) struct Reader {
    /// The unparsed tail of earlier messages; empty between complete items,
    /// which is the usual case, so most messages are parsed in place.
    partial: Vec<u8>,
}

impl Reader {
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<(), String> {
        if self.partial.is_empty() {
            let used = parse_all(data, on)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            self.partial.extend_from_slice(data);
            let used = parse_all(&self.partial, on)?;
            self.partial.drain(..used);
        }
        Ok(())
    }
}

/// Hands every complete item at the start of `bytes` to `on`; returns how
/// many bytes they took.
fn parse_all(bytes: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, String> {
    let mut used = 0;
    while let Some((event, len)) = parse_one(&bytes[used..])? {
        on(event);
        used += len;
    }
    Ok(used)
}

/// The item at the start of `bytes` and its length; `None` while it is
/// incomplete.
fn parse_one(bytes: &[u8]) -> Result<Option<(Event<'_>, usize)>, String> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        if bytes.len() > MAX_CONTROL_LINE {
            return Err("control line too long".into());
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| "control line not UTF-8")?;
    let after = end + 2;
    let (op, rest) = line
        .split_once([' ', '\t'])
        .map_or((line, ""), |(op, rest)| (op, rest.trim()));
    let is = |name: &str| op.eq_ignore_ascii_case(name);
    let event = if is("MSG") {
        return Ok(msg_payload(rest, &bytes[after..])?
            .map(|(payload, len)| (Event::Msg(payload), after + len)));
    } else if is("PING") {
        Event::Ping
    } else if is("PONG") {
        Event::Pong
    } else if is("+OK") {
        Event::Ok
    } else if is("-ERR") {
        Event::Err(rest.trim_matches('\''))
    } else if is("INFO") {
        Event::Info
    } else {
        return Err(format!("unexpected `{}`", op.escape_default()));
    };
    Ok(Some((event, after)))
}

/// The payload of `MSG <subject> <sid> [reply-to] <size>` from what follows
/// its control line, and the bytes it takes (CRLF included).
fn msg_payload<'a>(args: &str, body: &'a [u8]) -> Result<Option<(&'a [u8], usize)>, String> {
    let mut f = args.split_ascii_whitespace();
    // <subject> <sid> [reply-to] <size>, without allocating (once per MSG).
    let size: usize = match (f.next(), f.next(), f.next(), f.next(), f.next()) {
        (Some(_), Some(_), Some(size), None, None)
        | (Some(_), Some(_), Some(_), Some(size), None) => size.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("malformed `MSG {args}`"))?;
    if size > MAX_MSG_PAYLOAD {
        return Err(format!("MSG of {size} bytes"));
    }
    if body.len() < size + 2 {
        return Ok(None);
    }
    if &body[size..size + 2] != b"\r\n" {
        return Err("MSG payload longer than its size".into());
    }
    Ok(Some((&body[..size], size + 2)))
}

/// What a client says first: no `+OK` per command (verbose off, as the
/// engine acks nothing either), no headers; then the subscription, if any,
/// and a PING whose PONG confirms both were processed.
pub(super) fn hello(subject: Option<&str>) -> String {
    let mut out = String::from(
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false,\"no_responders\":false}\r\n",
    );
    if let Some(subject) = subject {
        let _ = write!(out, "SUB {subject} 1\r\n");
    }
    out.push_str("PING\r\n");
    out
}

/// `PUB <subject> <len>` with its payload, as one WebSocket message.
pub(super) fn publish(subject: &str, payload: &str) -> Vec<u8> {
    format!("PUB {subject} {}\r\n{payload}\r\n", payload.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(reader: &mut Reader, data: &[u8]) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        reader.feed(data, &mut |event| {
            seen.push(match event {
                Event::Msg(payload) => format!("MSG {}", String::from_utf8_lossy(payload)),
                other => format!("{other:?}"),
            })
        })?;
        Ok(seen)
    }

    #[test]
    fn several_items_in_one_message_are_all_read() {
        let mut reader = Reader::default();
        let seen = events(
            &mut reader,
            b"INFO {\"max_payload\":16384}\r\nPING\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 1 reply.x 2\r\nhi\r\n+OK\r\n-ERR 'Slow Consumer'\r\nPONG\r\n",
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                "Info",
                "Ping",
                "MSG hello",
                "MSG hi",
                "Ok",
                "Err(\"Slow Consumer\")",
                "Pong"
            ]
        );
        assert!(reader.partial.is_empty());
    }

    #[test]
    fn an_item_split_across_messages_is_reassembled() {
        let whole = b"MSG s 1 12\r\nhello\r\nworld\r\nPING\r\n";
        for cut in 1..whole.len() {
            let mut reader = Reader::default();
            let mut seen = events(&mut reader, &whole[..cut]).unwrap();
            seen.extend(events(&mut reader, &whole[cut..]).unwrap());
            assert_eq!(seen, ["MSG hello\r\nworld", "Ping"], "cut at {cut}");
            assert!(reader.partial.is_empty());
        }
    }

    #[test]
    fn garbage_and_oversized_items_are_errors_not_buffers() {
        assert!(events(&mut Reader::default(), b"HELLO\r\n").is_err());
        assert!(events(&mut Reader::default(), b"MSG s 1\r\n").is_err());
        assert!(events(&mut Reader::default(), b"MSG s 1 2\r\nabc\r\n").is_err());
        assert!(
            events(
                &mut Reader::default(),
                format!("MSG s 1 {}\r\n", MAX_MSG_PAYLOAD + 1).as_bytes()
            )
            .is_err()
        );
        assert!(events(&mut Reader::default(), &vec![b'x'; MAX_CONTROL_LINE + 1]).is_err());
    }

    #[test]
    fn publish_frames_the_payload_with_its_length() {
        assert_eq!(publish("room.bench", "{}"), b"PUB room.bench 2\r\n{}\r\n");
        assert!(hello(Some("x")).ends_with("SUB x 1\r\nPING\r\n"));
        assert!(!hello(None).contains("SUB"));
    }
}
