//! What COMMAND INFO, COMMAND LIST and COMMAND DOCS say about each command and subcommand,
//! in redis-server 7.0's words: its flags, ACL categories and tips, and its documentation
//! (summary, version it appeared in, complexity, deprecation). CLIENT SETINFO and CLIENT
//! NO-TOUCH, which came with Redis 7.2, are described as 7.2 describes them.
//!
//! The text lives in `about.tsv`, one line per command or subcommand (`client|id`), fields
//! separated by tabs: full name, flags, ACL categories, tips (each a space-separated list),
//! since, summary, complexity, and, for deprecated commands, the version that deprecated it
//! and what replaces it. Behaviour (arity, key positions) is in the command table; the
//! two are checked against each other by the unit tests.

use std::sync::OnceLock;

/// What Redis says about one command or subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct About {
    /// Full name: `get`, `client|id`.
    pub name: &'static str,
    /// Flags as COMMAND INFO lists them (`readonly fast`), space-separated.
    pub flags: &'static str,
    /// ACL categories with their `@` (`@read @string @fast`), space-separated.
    pub acl: &'static str,
    /// Tips for clients (`nondeterministic_output`), space-separated.
    pub tips: &'static str,
    /// The Redis version that introduced it.
    pub since: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Its time complexity, in words.
    pub complexity: &'static str,
    /// The version that deprecated it, and what replaces it.
    pub deprecated: Option<(&'static str, &'static str)>,
}

impl About {
    /// For a command the table does not describe (none, as the unit tests check).
    const NOTHING: About = About {
        name: "",
        flags: "",
        acl: "",
        tips: "",
        since: "",
        summary: "",
        complexity: "",
        deprecated: None,
    };

    /// True if it is in ACL category `cat` (named without its `@`, in any case), as
    /// `COMMAND LIST FILTERBY ACLCAT` asks.
    pub fn in_category(&self, cat: &[u8]) -> bool {
        self.acl
            .split(' ')
            .filter_map(|c| c.strip_prefix('@'))
            .any(|c| c.as_bytes().eq_ignore_ascii_case(cat))
    }
}

/// Every line of `about.tsv`.
pub fn all() -> &'static [About] {
    static ALL: OnceLock<Vec<About>> = OnceLock::new();
    ALL.get_or_init(|| {
        include_str!("about.tsv")
            .lines()
            .filter(|l| !l.is_empty())
            .map(parse)
            .collect()
    })
}

fn parse(line: &'static str) -> About {
    let f: Vec<&'static str> = line.split('\t').collect();
    let field = |i: usize| f.get(i).copied().unwrap_or_default();
    About {
        name: field(0),
        flags: field(1),
        acl: field(2),
        tips: field(3),
        since: field(4),
        summary: field(5),
        complexity: field(6),
        deprecated: (f.len() > 8).then(|| (field(7), field(8))),
    }
}

/// What Redis says about `full_name` (`get`, `client|id`).
pub fn about(full_name: &str) -> &'static About {
    all()
        .iter()
        .find(|a| a.name == full_name)
        .unwrap_or(&About::NOTHING)
}

/// The words of a space-separated list (none for an empty one).
pub fn words(list: &'static str) -> impl ExactSizeIterator<Item = &'static str> {
    let v: Vec<&'static str> = list.split(' ').filter(|w| !w.is_empty()).collect();
    v.into_iter()
}
