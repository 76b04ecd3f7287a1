//! A sub-agent's final message: inline in the hook input, else the end of its transcript —
//! a path from the input, so it is read only if it is a regular file, and only its tail.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use crate::untrusted::{Links, ReadError, open_regular};

/// How much of the end of a transcript is read for the final message.
pub const MAX_TRANSCRIPT_TAIL: u64 = 8 * 1024 * 1024;

/// The sub-agent's final message: given inline (`last_assistant_message`), else read from its
/// transcript (JSON lines): the last assistant text, or the `message` of the `SubagentHandback`
/// tool call sub-agents report with in auto permission mode.
pub fn final_message(input: &Value) -> Result<Option<String>, ReadError> {
    if let Some(s) = input["last_assistant_message"]
        .as_str()
        .filter(|s| !s.trim().is_empty())
    {
        return Ok(Some(s.to_string()));
    }
    let Some(path) = input["agent_transcript_path"].as_str() else {
        return Ok(None);
    };
    let text = read_tail(Path::new(path), MAX_TRANSCRIPT_TAIL)?;
    Ok(last_message(&text))
}

/// The last `cap` bytes of a regular file, from the first whole line in them.
fn read_tail(path: &Path, cap: u64) -> Result<String, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let (mut file, meta) = open_regular(path, Links::Follow)?;
    let skip = meta.len().saturating_sub(cap);
    if skip > 0 {
        file.seek(SeekFrom::Start(skip)).map_err(io)?;
    }
    let mut bytes = Vec::new();
    // `st_size` can lie (files in /proc say 0): the cap holds whatever it says.
    file.take(cap).read_to_end(&mut bytes).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match (skip > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_string(),
        _ => text.into_owned(),
    })
}

fn last_message(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        if v["type"] != "assistant" {
            return None;
        }
        let content = v["message"]["content"].as_array()?;
        let handback = content
            .iter()
            .find(|c| c["type"] == "tool_use" && c["name"] == "SubagentHandback")
            .and_then(|c| c["input"]["message"].as_str());
        let joined = match handback {
            Some(m) => m.to_string(),
            None => content
                .iter()
                .filter(|c| c["type"] == "text")
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        (!joined.trim().is_empty()).then_some(joined)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn final_message_from_input_or_transcript() {
        let msg = |v: Value| final_message(&v).unwrap();
        assert_eq!(
            msg(json!({"last_assistant_message": "done"})).as_deref(),
            Some("done")
        );
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("t.jsonl");
        std::fs::write(
            &t,
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"first\"}]}}\n\
             {\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"final answer\"}]}}\n\
             {\"type\":\"user\",\"message\":{\"content\":\"x\"}}\n",
        )
        .unwrap();
        assert_eq!(
            msg(json!({"agent_transcript_path": t})).as_deref(),
            Some("final answer")
        );
        assert_eq!(msg(json!({})), None);

        // Auto permission mode: the report is the input of a SubagentHandback call.
        std::fs::write(
            &t,
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"SubagentHandback\",\"input\":{\"message\":\"handed back\"}}]}}\n",
        )
        .unwrap();
        assert_eq!(
            msg(json!({"agent_transcript_path": t})).as_deref(),
            Some("handed back")
        );
    }

    /// Issue 15 (low) / 16 (1): a transcript path naming a device or FIFO is refused at
    /// once, and a huge transcript is read only at its end.
    #[test]
    fn transcripts_are_bounded() {
        for p in ["/dev/zero", "/dev/urandom", "/"] {
            assert!(
                matches!(
                    final_message(&json!({"agent_transcript_path": p})),
                    Err(ReadError::NotRegular { .. })
                ),
                "{p}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(final_message(&json!({"agent_transcript_path": fifo})).is_err());

        let t = tmp.path().join("long.jsonl");
        let filler = "{\"type\":\"user\",\"message\":{\"content\":\"padding\"}}\n";
        let mut text = filler.repeat(200);
        text.push_str("{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"the end\"}]}}\n");
        std::fs::write(&t, &text).unwrap();
        let tail = read_tail(&t, 300).unwrap();
        assert!(tail.len() <= 300 && tail.starts_with('{'), "{tail}");
        assert_eq!(last_message(&tail).as_deref(), Some("the end"));
    }
}
