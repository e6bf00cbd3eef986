//! The example gateway's log formatter (`examples/gateway/log.rs`), compiled here as it is there,
//! under a real `tracing-subscriber`: the text it writes for each kind of field, and the
//! escaping of client text and of control characters in a message.

#[path = "../examples/gateway/log.rs"]
mod log;

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A writer into a shared buffer, for the subscriber's `MakeWriter`.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines the gateway's subscriber set-up writes for the events `emit` sends.
fn lines(emit: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .fmt_fields(log::Fields)
        .with_timer(log::Rfc3339)
        .with_writer(move || writer.clone())
        .with_target(true)
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// The same with `tracing-subscriber`'s default fields and timer.
fn default_lines(emit: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_target(true)
        .finish();
    tracing::subscriber::with_default(subscriber, emit);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

/// A line without its timestamp.
fn after_time(line: &str) -> &str {
    line.split_once(' ').unwrap().1
}

#[test]
fn fields_are_written_as_the_default_writes_them() {
    let event = || {
        tracing::info!(
            target: "portcullis::audit",
            outcome = "allowed",
            status = 200u64,
            delta = -3i64,
            cached = true,
            r#type = "jwt",
            trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
            "request decided"
        );
    };
    let text = lines(event);
    let default = default_lines(event);
    let line = text.lines().next().unwrap();
    assert_eq!(
        after_time(line),
        after_time(default.lines().next().unwrap())
    );
    let default_time = default.split_once(' ').unwrap().0;
    assert_eq!(line.split_once(' ').unwrap().0.len(), default_time.len());
    // `2026-12-01T19:12:20.780092Z  INFO portcullis::audit: …`: RFC 3339 UTC, to the microsecond.
    let (time, rest) = line.split_once(' ').unwrap();
    assert_eq!(time.len(), 27, "{line}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
    assert_eq!(
        rest.trim_start(),
        "INFO portcullis::audit: request decided outcome=\"allowed\" status=200 delta=-3 \
         cached=true type=\"jwt\" trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[test]
fn client_text_and_control_characters_never_reach_the_log_raw() {
    let hostile = "ada\"\n\u{1b}[31m\u{85}forged=1\\";
    let text = lines(|| {
        tracing::info!(subject = hostile, "line one\nline two \u{1b}[2J done");
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{85}'),
        "{text}"
    );
    assert!(
        text.contains("line one\\u{a}line two \\u{1b}[2J done"),
        "{text}"
    );
    assert!(text.contains(&format!("subject={hostile:?}")), "{text}");
    // Printable text outside ASCII is escaped as Debug writes it, which leaves it readable.
    let text = lines(|| tracing::info!(subject = "zoë", "m"));
    assert!(text.contains("subject=\"zoë\""), "{text}");
}
