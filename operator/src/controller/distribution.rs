//! Who fetches a model file from whom, so the origin sends it about once however many boards
//! need it. Pure: the result is the ordered `peers` list written into each Board entry.
//!
//! The boards that need one blob (one sha256) are put in a line: boards that hold it complete
//! first, then boards part-way through, then boards that have nothing, each group by name (so the
//! order, and the peers written, stay the same from one reconcile to the next). Board `i` gets
//! board `(i - 1) / fan_out` as its parent, which gives every board at most `fan_out` children:
//! with the default fan-out of 1 that is a chain.
//!
//! ```text
//!   origin ──► b0 ──► b1 ──► b2 ──► b3          fan-out 1 (default): a pipelined chain
//!   origin ──► b0 ─┬► b1 ─┬► b3                 fan-out 2: a binary tree
//!                  └► b2  └► b4
//! ```
//!
//! Each board's `peers` is its parent first, then the other boards before it, nearest first, as
//! fallbacks; the first board of a fresh line has none and fetches from the origin. An agent
//! tries its peers in order at its current offset and falls back to the origin, and it serves a
//! blob while the blob is still arriving, so a chain pipelines: b3 starts as soon as b2 has the
//! first bytes.

use std::collections::BTreeMap;

/// Default upload fan-out: every board sends the file to at most one other board.
pub const DEFAULT_FAN_OUT: usize = 1;

/// Longest `peers` list written: the parent plus three fallbacks. Longer lists add bytes to every
/// Board entry (and to every watch event) without making a fetch likelier to succeed.
pub const MAX_PEERS: usize = 4;

/// How much of the blob a board has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlobState {
    /// Complete and verified (Cached, Loading or Ready).
    Complete,
    /// Downloading now.
    InProgress,
    /// Nothing yet.
    Missing,
}

/// One board in the line for one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    /// Board name.
    pub board: &'a str,
    /// The agent's base URL; a board without one can fetch but cannot serve.
    pub endpoint: Option<&'a str>,
    /// What it has.
    pub state: BlobState,
}

/// The ordered line: complete, then in progress, then missing; by name within each group.
pub fn order<'a>(members: &[Member<'a>]) -> Vec<Member<'a>> {
    let mut line = members.to_vec();
    line.sort_by(|a, b| (a.state, a.board).cmp(&(b.state, b.board)));
    line.dedup_by(|a, b| a.board == b.board);
    line
}

/// The `peers` list of every member, by board name. `fan_out` below 1 is treated as 1.
pub fn peers(members: &[Member<'_>], fan_out: usize) -> BTreeMap<String, Vec<String>> {
    let fan_out = fan_out.max(1);
    let line = order(members);
    let mut out = BTreeMap::new();
    for (i, member) in line.iter().enumerate() {
        let mut list: Vec<String> = Vec::new();
        if i > 0 {
            let parent = (i - 1) / fan_out;
            let earlier = std::iter::once(parent).chain((0..i).rev().filter(|&j| j != parent));
            for j in earlier {
                if list.len() == MAX_PEERS {
                    break;
                }
                if let Some(endpoint) = line[j].endpoint {
                    list.push(endpoint.to_owned());
                }
            }
        }
        out.insert(member.board.to_owned(), list);
    }
    out
}

/// How many boards each board uploads to as a parent (for tests and docs: at most `fan_out`).
pub fn children(members: &[Member<'_>], fan_out: usize) -> BTreeMap<String, usize> {
    let fan_out = fan_out.max(1);
    let line = order(members);
    let mut out: BTreeMap<String, usize> = line.iter().map(|m| (m.board.to_owned(), 0)).collect();
    for i in 1..line.len() {
        *out.entry(line[(i - 1) / fan_out].board.to_owned()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member<'a>(board: &'a str, endpoint: &'a str, state: BlobState) -> Member<'a> {
        Member { board, endpoint: Some(endpoint), state }
    }

    #[test]
    fn fresh_chain_starts_at_the_origin_and_pipelines() {
        let members = [
            member("c", "http://c", BlobState::Missing),
            member("a", "http://a", BlobState::Missing),
            member("b", "http://b", BlobState::Missing),
        ];
        let peers = peers(&members, 1);
        assert_eq!(peers["a"], Vec::<String>::new(), "the first board goes to the origin");
        assert_eq!(peers["b"], ["http://a"]);
        assert_eq!(peers["c"], ["http://b", "http://a"], "parent first, then earlier boards nearest first");
    }

    #[test]
    fn holders_come_first_then_downloads_then_new_boards() {
        let members = [
            member("a", "http://a", BlobState::Missing),
            member("z", "http://z", BlobState::Complete),
            member("m", "http://m", BlobState::InProgress),
        ];
        let line: Vec<_> = order(&members).iter().map(|m| m.board).collect();
        assert_eq!(line, ["z", "m", "a"]);
        let peers = peers(&members, 1);
        assert_eq!(peers["m"], ["http://z"]);
        assert_eq!(peers["a"], ["http://m", "http://z"]);
    }

    #[test]
    fn fan_out_bounds_uploads_per_board() {
        let names: Vec<String> = (0..20).map(|i| format!("b{i:02}")).collect();
        let endpoints: Vec<String> = names.iter().map(|n| format!("http://{n}")).collect();
        let members: Vec<_> = names.iter().zip(&endpoints).map(|(n, e)| member(n, e, BlobState::Missing)).collect();
        for fan_out in [1, 2, 3] {
            let children = children(&members, fan_out);
            assert!(children.values().all(|&c| c <= fan_out), "fan-out {fan_out}: {children:?}");
            // Every board but the first has a parent: the origin serves one board.
            let peers = peers(&members, fan_out);
            assert_eq!(peers.values().filter(|p| p.is_empty()).count(), 1);
            assert!(peers.values().all(|p| p.len() <= MAX_PEERS));
        }
        let tree = peers(&members, 2);
        assert_eq!(tree["b03"][0], "http://b01", "heap layout: parent of 3 is 1");
        assert_eq!(tree["b04"][0], "http://b01");
        assert_eq!(tree["b05"][0], "http://b02");
    }

    #[test]
    fn boards_without_an_endpoint_are_not_peers() {
        let members = [
            Member { board: "a", endpoint: None, state: BlobState::Complete },
            member("b", "http://b", BlobState::Missing),
            member("c", "http://c", BlobState::Missing),
        ];
        let peers = peers(&members, 1);
        assert_eq!(peers["b"], Vec::<String>::new(), "falls back to the origin");
        assert_eq!(peers["c"], ["http://b"]);
    }

    #[test]
    fn order_is_stable_and_deduplicated() {
        let members = [
            member("b", "http://b", BlobState::Missing),
            member("a", "http://a", BlobState::Missing),
            member("a", "http://a", BlobState::Missing),
        ];
        assert_eq!(order(&members).len(), 2);
        assert_eq!(peers(&members, 1), peers(&[members[1], members[0]], 1));
    }
}
