//! YAML parsing whose errors name the full key path and the line, for files an
//! operator wrote: bounded in size and nesting before the parser sees them, without
//! control characters, duplicate keys or tags, and with messages that never repeat a
//! huge value.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest configuration file read: far above any real one (a thousand accounts
/// with overrides is about 100 KiB).
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of `[` and `{` accepted (the parser's cost grows with it).
const MAX_FLOW_DEPTH: usize = 32;
/// Longest error message: a message quoting a huge value is cut.
const MAX_MESSAGE: usize = 400;

/// Reads a file of at most [`MAX_FILE_BYTES`], so a device or a huge file cannot fill
/// memory.
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "larger than {} KiB: not a configuration file",
            MAX_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("{}: not UTF-8 text", position(&e.into_bytes()[..at]))
    })
}

/// "line L, column C" of the end of `before`.
fn position(before: &[u8]) -> String {
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    format!("line {line}, column {column}")
}

/// Deserializes YAML, naming the full key path of an error (serde_yaml alone names the
/// enclosing map, not the key) and the line where the parser gives one. Refused before
/// that: more than [`MAX_FILE_BYTES`], control characters, flow nesting deeper than
/// [`MAX_FLOW_DEPTH`], a key given twice in one mapping (naming both lines), and YAML
/// tags (`!tag`), which no key of ours takes.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    check_text(text).map_err(|m| cut(&m))?;
    // A first, untyped pass finds what the typed one would let through: duplicate keys
    // in flow mappings and tags.
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| cut(&e.to_string()))?;
    check_value(&value, &mut Vec::new()).map_err(|m| cut(&m))?;
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde_yaml may prefix its own (shorter) path; keep one, the full one.
        let inner = match inner.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => {
                rest.to_string()
            }
            _ => inner,
        };
        cut(&if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// The message, cut to [`MAX_MESSAGE`] characters.
fn cut(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE {
        return message.to_string();
    }
    let kept: String = message.chars().take(MAX_MESSAGE).collect();
    format!("{kept}… (cut)")
}

fn check_text(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "larger than {} KiB: not a configuration file",
            MAX_FILE_BYTES / 1024
        ));
    }
    if let Some((i, c)) = text
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!(
            "{}: control character U+{:04X} is not allowed",
            position(&text.as_bytes()[..i]),
            u32::from(c)
        ));
    }
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "{}: nested deeper than {MAX_FLOW_DEPTH} levels",
                        position(&text.as_bytes()[..i])
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, '\n') => {}
            _ => {}
        }
    }
    duplicate_keys(text)
}

/// A mapping of block style being read: its indentation, its path, its keys' lines.
struct Scope {
    indent: usize,
    path: String,
    keys: HashMap<String, usize>,
    /// The next list index, for a list at this scope's indentation.
    items: usize,
}

/// Keys given twice in one block mapping, with both lines (the parser keeps the last
/// and says nothing). Flow mappings are checked by the untyped pass.
fn duplicate_keys(text: &str) -> Result<(), String> {
    let mut scopes: Vec<Scope> = vec![Scope {
        indent: 0,
        path: String::new(),
        keys: HashMap::new(),
        items: 0,
    }];
    // A block scalar's lines (after `key: |`) are text, not keys.
    let mut block_scalar_above: Option<usize> = None;
    let mut last_key: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line[indent..].trim_end();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(above) = block_scalar_above {
            if indent > above {
                continue;
            }
            block_scalar_above = None;
        }
        if body == "---" {
            scopes.truncate(1);
            scopes[0].keys.clear();
            continue;
        }
        let (mut at, mut rest) = (indent, body);
        // List items: each `- ` opens a new mapping two columns further in.
        while let Some(after) =
            rest.strip_prefix("- ")
                .or(if rest == "-" { Some("") } else { None })
        {
            while scopes.len() > 1 && scopes[scopes.len() - 1].indent > at {
                scopes.pop();
            }
            let parent = parent_of(&mut scopes, at, &last_key);
            let index = parent.items;
            parent.items += 1;
            let path = format!("{}[{index}]", parent.path);
            let trimmed = after.trim_start();
            at += 2 + (after.len() - trimmed.len());
            rest = trimmed;
            scopes.push(Scope {
                indent: at,
                path,
                keys: HashMap::new(),
                items: 0,
            });
        }
        let Some((key, value)) = key_of(rest) else {
            continue;
        };
        while scopes.len() > 1 && scopes[scopes.len() - 1].indent > at {
            scopes.pop();
        }
        let scope = parent_of(&mut scopes, at, &last_key);
        if let Some(first) = scope.keys.insert(key.clone(), number) {
            let path = join(&scope.path, &key);
            return Err(format!(
                "{path}: given twice, at line {first} and line {number}"
            ));
        }
        let path = join(&scope.path, &key);
        last_key = Some((at, path));
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_above = Some(at);
        }
    }
    Ok(())
}

/// The scope that a key (or list item) at column `at` belongs to, opening one for a
/// mapping nested under the last key when `at` is deeper than the innermost scope.
fn parent_of<'a>(
    scopes: &'a mut Vec<Scope>,
    at: usize,
    last_key: &Option<(usize, String)>,
) -> &'a mut Scope {
    let innermost = scopes.len() - 1;
    if scopes[innermost].indent < at {
        let path = match last_key {
            Some((key_at, path)) if *key_at < at => path.clone(),
            _ => scopes[innermost].path.clone(),
        };
        scopes.push(Scope {
            indent: at,
            path,
            keys: HashMap::new(),
            items: 0,
        });
    }
    let last = scopes.len() - 1;
    &mut scopes[last]
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The key and the rest of a `key: value` line of block style; none for a flow
/// collection, a plain scalar, or anything else.
fn key_of(line: &str) -> Option<(String, &str)> {
    let (key, rest) = match line.chars().next()? {
        q @ ('"' | '\'') => {
            let end = line[1..].find(q)? + 1;
            (line[1..end].to_string(), line[end + 1..].strip_prefix(':')?)
        }
        '[' | '{' | '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' => return None,
        _ => {
            let colon = line
                .char_indices()
                .find(|(i, c)| {
                    *c == ':' && matches!(line[i + 1..].chars().next(), None | Some(' ' | '\t'))
                })
                .map(|(i, _)| i)?;
            (line[..colon].trim_end().to_string(), &line[colon + 1..])
        }
    };
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, rest))
}

/// Lists of names: an item that YAML reads as a number or a boolean (`include: [1, 2]`,
/// `regions: [yes]`) is a mistake, not a name.
const STRING_LISTS: &[&str] = &["include", "exclude", "regions"];

/// What the untyped pass refuses: tags (`!name`), which no key of ours takes, and
/// items of [`STRING_LISTS`] that are not strings.
fn check_value(value: &serde_yaml::Value, path: &mut Vec<String>) -> Result<(), String> {
    use serde_yaml::Value;
    let here = |path: &Vec<String>| {
        if path.is_empty() {
            "the file".to_string()
        } else {
            path.join("")
        }
    };
    match value {
        Value::Tagged(t) => Err(format!(
            "{}: YAML tags are not accepted here (found {})",
            here(path),
            t.tag
        )),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                check_value(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                let names_strings = STRING_LISTS.contains(&name.as_str());
                path.push(if path.is_empty() {
                    name
                } else {
                    format!(".{name}")
                });
                if let (true, Value::Sequence(items)) = (names_strings, v) {
                    if let Some(i) = items
                        .iter()
                        .position(|item| !matches!(item, Value::String(_)))
                    {
                        return Err(format!(
                            "{}[{i}]: expected a string (quote it: YAML reads this as a number or a boolean)",
                            here(path)
                        ));
                    }
                }
                check_value(v, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_yaml::<serde_yaml::Value>(text).expect_err("refused")
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let e = err("collectors:\n  ssm_parameters:\n    rate_limit: 1\n  ssm_parameters:\n    rate_limit: 2\n");
        assert_eq!(
            e,
            "collectors.ssm_parameters: given twice, at line 2 and line 4"
        );
        let e =
            err("accounts:\n  - account_id: \"1\"\n    limit_overrides:\n      a: 1\n      a: 2\n");
        assert_eq!(
            e,
            "accounts[0].limit_overrides.a: given twice, at line 4 and line 5"
        );
        let e = err("basic_auth_users:\n  alice: x\n  'alice': y\n");
        assert!(
            e.contains("basic_auth_users.alice: given twice, at line 2 and line 3"),
            "{e}"
        );
        // The same key in two list items, in two mappings, or in a block scalar is fine.
        for ok in [
            "accounts:\n  - account_id: \"1\"\n  - account_id: \"2\"\n",
            "a:\n  x: 1\nb:\n  x: 1\n",
            "a: |\n  x: 1\n  x: 1\nb: 2\n",
            "accounts:\n- account_id: \"1\"\n  limit_overrides: {a: 1}\n- account_id: \"2\"\n",
        ] {
            assert!(parse_yaml::<serde_yaml::Value>(ok).is_ok(), "{ok}");
        }
        // Flow mappings: the untyped pass names the key.
        assert!(err("a: {x: 1, x: 2}\n").contains("duplicate entry with key \"x\""));
    }

    #[test]
    fn control_characters_name_their_line() {
        assert_eq!(
            err("regions:\n  - eu-west-1\x00\n"),
            "line 2, column 14: control character U+0000 is not allowed"
        );
        assert!(err("a: b\x07\n").contains("line 1, column 5"));
        assert!(parse_yaml::<serde_yaml::Value>("a:\tb\r\n").is_ok());
    }

    #[test]
    fn deep_nesting_and_tags_are_refused_quickly() {
        // Refused by the scan, before the parser (whose cost grows with the depth).
        let deep = "a: ".to_string() + &"[".repeat(100_000);
        assert_eq!(
            err(&deep),
            "line 1, column 36: nested deeper than 32 levels"
        );
        assert!(
            parse_yaml::<serde_yaml::Value>("a: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n").is_ok()
        );
        assert!(err("regions: !evil [eu-west-1]\n")
            .contains("regions: YAML tags are not accepted here (found !evil)"));
    }

    #[test]
    fn messages_never_repeat_a_huge_value() {
        let big = "x".repeat(100_000);
        let e = err(&format!("{big}: [\n"));
        assert!(
            e.chars().count() < MAX_MESSAGE + 20,
            "{} characters",
            e.len()
        );
        let e = err(&"a".repeat(MAX_FILE_BYTES as usize + 1));
        assert!(e.contains("larger than 1024 KiB"), "{e}");
    }
}
