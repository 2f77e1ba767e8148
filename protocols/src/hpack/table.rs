//! The HPACK static table and a dynamic table that also works when joined mid-way.

use std::collections::VecDeque;

/// RFC 7541 Appendix A: the 61 static entries (index 1 is `STATIC[0]`).
pub(super) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// RFC 7541 §4.1: an entry's size is its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;

/// One dynamic table entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub name: String,
    pub value: String,
    /// The name came from an entry that was never seen (joined mid-way).
    pub partial: bool,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// What an index refers to.
pub(super) enum Lookup<'a> {
    Static(&'static str, &'static str),
    Dynamic(&'a Entry),
    /// A dynamic entry inserted before the decoder started watching.
    Unknown,
}

/// The dynamic table, newest entry first.
///
/// Indices count from the newest entry, so the entries this decoder has seen are
/// always at the right positions even when older, unseen ones exist behind them: an
/// index past the known entries is reported as [`Lookup::Unknown`], never as a wrong
/// entry. That is what lets a decoder that joined mid-connection learn as it goes.
#[derive(Debug)]
pub(super) struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    /// The encoder's announced maximum size, when a size update (or the start of the
    /// connection) told it; `None` when joined mid-way.
    max_size: Option<usize>,
    /// Bytes this table may hold regardless of what the encoder announces.
    memory_cap: usize,
}

impl DynamicTable {
    pub fn new(max_size: Option<usize>, memory_cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
            memory_cap,
        }
    }

    pub fn get(&self, index: usize) -> Option<Lookup<'_>> {
        match index {
            0 => None,
            1..=61 => STATIC
                .get(index - 1)
                .map(|&(name, value)| Lookup::Static(name, value)),
            _ => Some(
                self.entries
                    .get(index - 62)
                    .map_or(Lookup::Unknown, Lookup::Dynamic),
            ),
        }
    }

    pub fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        let limit = self.limit();
        if size > limit {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(limit - size);
        self.size += size;
        self.entries.push_front(entry);
    }

    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = Some(max_size);
        self.evict_to(self.limit());
    }

    /// Forgets everything: the encoder's state is no longer known (lost bytes or an
    /// undecodable block).
    pub fn reset_unknown(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.max_size = None;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> Option<usize> {
        self.max_size
    }

    fn limit(&self) -> usize {
        self.max_size
            .map_or(self.memory_cap, |m| m.min(self.memory_cap))
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}
