//! The values the queue stores in its columns, as types: an event's state, why it is dead, a file
//! record's state, a send-log line's class. Each has one table of its stored values (`ALL` and
//! `as_str`/`code`), so SQL binds them and other modules never write the literal.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};
use std::fmt;

/// Where an event is. Its code is what `events.state` holds when the row says it; a row with
/// state 0 (`cursor::QUEUED`) is sent or pending by where the sent cursor is (`cursor.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Pending,
    Sent,
    Dead,
}

impl EventState {
    pub const ALL: [EventState; 3] = [EventState::Pending, EventState::Sent, EventState::Dead];

    /// The integer stored in `events.state`.
    pub const fn code(self) -> i64 {
        match self {
            EventState::Pending => 3,
            EventState::Sent => 1,
            EventState::Dead => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<EventState> {
        EventState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// As `watch` shows it.
    pub fn label(self) -> &'static str {
        match self {
            EventState::Pending => "queued",
            EventState::Sent => "sent",
            EventState::Dead => "dead",
        }
    }
}

impl ToSql for EventState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

/// Why an event is dead (`events.dead_reason`); `dead-letter requeue --reason` names one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadReason {
    /// Older than the attribution window TikTok accepts.
    Expired,
    /// Too far in the future.
    Future,
    /// Refused by TikTok on its own as invalid.
    Invalid,
    /// Refused by TikTok on its own as too large.
    TooLarge,
    /// Refused by TikTok on its own: an identifier was not hashed.
    PiiNotHashed,
    /// Its stored JSON no longer matches its checksum (damaged on disk); never sent as is.
    Corrupt,
}

impl DeadReason {
    pub const ALL: [DeadReason; 6] = [
        DeadReason::Expired,
        DeadReason::Future,
        DeadReason::Invalid,
        DeadReason::TooLarge,
        DeadReason::PiiNotHashed,
        DeadReason::Corrupt,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DeadReason::Expired => "expired",
            DeadReason::Future => "future",
            DeadReason::Invalid => "invalid",
            DeadReason::TooLarge => "too_large",
            DeadReason::PiiNotHashed => "pii_not_hashed",
            DeadReason::Corrupt => "corrupt",
        }
    }

    pub fn parse(text: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The message stored with an event dead on arrival (expired or future when it was read).
    pub const ON_ARRIVAL_MESSAGE: &'static str = "not sent: outside the window TikTok accepts";

    /// The message stored with a queued event that passed the attribution window unsent.
    pub const EXPIRED_MESSAGE: &'static str = "older than the attribution window; never sent";

    /// The message stored with an event whose JSON failed its checksum, until it is rebuilt from
    /// its archived file (which puts it back in the queue).
    pub const CORRUPT_MESSAGE: &'static str =
        "its stored JSON is damaged (checksum mismatch); not sent, waiting to be rebuilt from the archive";

    /// The same, once no archived copy of its file could rebuild it.
    pub const CORRUPT_FINAL_MESSAGE: &'static str =
        "its stored JSON is damaged (checksum mismatch) and no archived copy of its file could rebuild it; never sent";
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for DeadReason {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// A file record's state (`files.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Inside its ingest transaction, or (committed) a big file some parts of which are committed.
    Ingesting,
    /// Read whole and committed.
    Ingested,
    /// Read part by part as it grows (append mode).
    Append,
}

impl FileState {
    pub const ALL: [FileState; 3] = [FileState::Ingesting, FileState::Ingested, FileState::Append];

    pub const fn as_str(self) -> &'static str {
        match self {
            FileState::Ingesting => "ingesting",
            FileState::Ingested => "ingested",
            FileState::Append => "append",
        }
    }

    pub fn parse(text: &str) -> Option<FileState> {
        FileState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl ToSql for FileState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for FileState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        FileState::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown file state `{text}`").into()))
    }
}

impl Serialize for FileState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What one request came to, as the send log records it (`send_log.class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendClass {
    Delivered,
    /// TikTok's partial success (code 20001): the events count as sent.
    Partial,
    /// Refused for what is in it; the reason a single event would be dead-lettered with (only
    /// `Invalid`, `TooLarge` and `PiiNotHashed` are ever refusals).
    Rejected(DeadReason),
    Auth,
    Retry,
    DryRun,
}

impl SendClass {
    pub const ALL: [SendClass; 8] = [
        SendClass::Delivered,
        SendClass::Partial,
        SendClass::Rejected(DeadReason::Invalid),
        SendClass::Rejected(DeadReason::TooLarge),
        SendClass::Rejected(DeadReason::PiiNotHashed),
        SendClass::Auth,
        SendClass::Retry,
        SendClass::DryRun,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SendClass::Delivered => "delivered",
            SendClass::Partial => "partial",
            SendClass::Rejected(DeadReason::Invalid) => "rejected_invalid",
            SendClass::Rejected(DeadReason::TooLarge) => "rejected_too_large",
            SendClass::Rejected(DeadReason::PiiNotHashed) => "rejected_pii_not_hashed",
            SendClass::Rejected(DeadReason::Expired) => "rejected_expired",
            SendClass::Rejected(DeadReason::Future) => "rejected_future",
            SendClass::Rejected(DeadReason::Corrupt) => "rejected_corrupt",
            SendClass::Auth => "auth",
            SendClass::Retry => "retry",
            SendClass::DryRun => "dry_run",
        }
    }

    pub fn parse(text: &str) -> Option<SendClass> {
        SendClass::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for SendClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for SendClass {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for SendClass {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        SendClass::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown send class `{text}`").into()))
    }
}

impl Serialize for SendClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_state_round_trips_through_its_code() {
        for state in EventState::ALL {
            assert_eq!(EventState::from_code(state.code()), Some(state));
        }
        let codes: Vec<i64> = EventState::ALL.iter().map(|s| s.code()).collect();
        // Pending was 0 up to schema 9; 0 is now a queued event, sent or pending by the cursor.
        assert_eq!(codes, [3, 1, 2], "the on-disk values never change");
        assert_eq!(EventState::from_code(0), None);
    }

    #[test]
    fn every_dead_reason_round_trips_through_its_text() {
        for reason in DeadReason::ALL {
            assert_eq!(DeadReason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
        let texts: Vec<&str> = DeadReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts, ["expired", "future", "invalid", "too_large", "pii_not_hashed", "corrupt"]);
        assert_eq!(DeadReason::parse("Expired"), None);
    }

    #[test]
    fn every_file_state_round_trips_through_its_text() {
        for state in FileState::ALL {
            assert_eq!(FileState::parse(state.as_str()), Some(state));
        }
        assert_eq!(FileState::parse("done"), None);
    }

    #[test]
    fn every_send_class_round_trips_through_its_text() {
        for class in SendClass::ALL {
            assert_eq!(SendClass::parse(class.as_str()), Some(class));
        }
        let texts: Vec<&str> = SendClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            texts,
            [
                "delivered",
                "partial",
                "rejected_invalid",
                "rejected_too_large",
                "rejected_pii_not_hashed",
                "auth",
                "retry",
                "dry_run"
            ]
        );
    }
}
