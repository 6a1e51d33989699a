//! YAML parsing whose errors name the full key path and the line.

/// Deserializes YAML, naming the full key path of an error (serde_yaml alone names the
/// enclosing map, not the key) and the line where the parser gives one.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
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
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}
