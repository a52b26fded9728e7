//! [`Options`]: the string options of `init` (keys as in llm_datadist).

/// Options for [`DataDist::init`](crate::DataDist::init): string keys and
/// values, as llm_datadist's `LLMConfig.generate_options()` produces them.
/// The full list of keys and ranges is in `ffi/llmlink.h`; an unknown key or
/// a value out of range fails `init` with `PARAM_INVALID`.
///
/// ```
/// let options = llmlink::Options::new()
///     .set("llm.listenIpInfo", "127.0.0.1:0")
///     .set("llm.SyncKvCacheWaitTime", "5000");
/// assert_eq!(options.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pairs: Vec<(String, String)>,
}

impl Options {
    /// No options: every key at its default.
    pub fn new() -> Options {
        Options::default()
    }

    /// Adds `key = value` (pairs reach the C side in the order added).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Options {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Adds `key = value` in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((key.into(), value.into()));
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there is no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Options {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Options {
        Options {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}
