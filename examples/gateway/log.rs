//! How the gateway writes its log lines: the text of `tracing-subscriber`'s default
//! (`2026-12-01T19:12:20.780092Z  INFO target: message name="text" name=42`), written with less
//! of `core::fmt`. Every request logs an audit event of eleven fields; with the default, its
//! timestamp and fields were about a seventh of the instructions a request costs the gateway
//! (`docs/performance.md`).

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The time in RFC 3339, UTC, to the microsecond, as the default writes it; humantime formats
/// it in a buffer and writes it once.
pub(crate) struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        // humantime refuses (panics on) a time before 1970: a clock set that far back.
        if now < UNIX_EPOCH {
            return writer.write_str("<before 1970>");
        }
        write!(writer, "{}", humantime::format_rfc3339_micros(now))
    }
}

/// The fields of an event as `name=value` after its message, separated by spaces. A string
/// field is quoted; one that holds anything but printable ASCII, `"` or `\` is written as Rust's
/// `Debug` writes it (escaped), so a client's bytes in a string field never start a line or
/// drive a terminal. The message's control characters are escaped too (`\u{1b}`, `\u{a}`),
/// which the default leaves in for a line break. Other values are written as the default writes
/// them: numbers and booleans as they are, anything else by its `Debug`.
pub(crate) struct Fields;

impl<'writer> FormatFields<'writer> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_> {
    /// The space before every field but the first, then `name=` (the message has no name).
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() == "message" {
            return Ok(());
        }
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    fn string(&mut self, field: &Field, value: &str) -> fmt::Result {
        self.name(field)?;
        if field.name() == "message" {
            return Escaped(&mut self.writer).write_str(value);
        }
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if plain {
            self.writer.write_char('"')?;
            self.writer.write_str(value)?;
            self.writer.write_char('"')
        } else {
            write!(self.writer, "{value:?}")
        }
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.string(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| self.writer.write_str(if value { "true" } else { "false" }));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.name(field).and_then(|()| {
            if field.name() == "message" {
                write!(Escaped(&mut self.writer), "{value:?}")
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }
}

/// Writes text through, with its control characters escaped as `\u{1b}`, `\u{a}`, `\u{85}`.
struct Escaped<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let control = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "\\u{{{:x}}}", u32::from(control))?;
            rest = &rest[at + control.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}
