//! Validated identifiers. Every ID that reaches a path, a query or a file name is parsed
//! here first: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` and never `..`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} {shown}: use 1-128 characters from A-Z a-z 0-9 . _ - starting with a letter or digit, without \"..\""
)]
pub struct IdError {
    pub kind: &'static str,
    /// The rejected value, truncated and escaped for safe display.
    pub shown: String,
}

fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !s.contains("..");
    if ok {
        Ok(())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(IdError {
            kind,
            shown: format!("{shown:?}"),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const KIND: &'static str = $kind;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate($kind, s).map(|()| $name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// An issue (unit of work) that agents share results and context for.
    IssueId, "issue_id"
);
id_type!(
    /// An agent type from the roster, e.g. `python-specialist`.
    AgentType, "agent_type"
);
id_type!(
    /// One running agent instance.
    AgentId, "agent_id"
);
id_type!(
    /// An event name, e.g. `agent_completed`.
    EventType, "event_type"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in [
            "issue-123",
            "python-specialist",
            "a",
            "A.b_c-9",
            &"x".repeat(128),
        ] {
            assert!(IssueId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_traversal_and_junk() {
        for bad in [
            "",
            "..",
            "a..b",
            "../etc",
            "a/b",
            "%2e%2e",
            ".hidden",
            "-x",
            "a\0b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            let err = IssueId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("issue_id"), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<AgentType>("\"ok-type\"").is_ok());
        assert!(serde_json::from_str::<AgentType>("\"../x\"").is_err());
    }
}
