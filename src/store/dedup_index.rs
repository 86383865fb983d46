//! The SQLite writer's index of the dedup keys received within the dedup window, in memory.
//!
//! A UNIQUE index on `dedup_key` made SQLite the arbiter, but Volt's message ids are random,
//! so every event dirtied a random page of that index and the WAL wrote it whole: about 4 KiB
//! more per event, and half the events per second (bench/RESULTS.md). Here the table keeps
//! its arrival order and this index finds, for a key, the ids of the rows that may hold it;
//! the writer then reads those rows to confirm, so a hash collision never makes a new event a
//! duplicate. The writer is the only one inserting events into the file, so the index sees
//! every commit, and it is rebuilt from the table at start-up.
//!
//! What is kept is compact, since it grows with the events of the whole window: 4 bytes a key
//! (a fingerprint of the hash and the id's low bits), in fixed-size tables of
//! [`IDS_PER_SEGMENT`] consecutive ids each, so growing never copies what is there, and a
//! segment whose newest key left the window is freed whole. Rejected: a `HashMap` from a
//! 64-bit hash to the id, 16 bytes an entry and twice that while it grows (80 MB or more for
//! the bench's 2-3 million events against a 50 MB budget).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use chrono::{DateTime, Utc};

/// Low bits of an id kept in a slot; a segment holds the ids that share the bits above.
const ID_BITS: u32 = 18;
const IDS_PER_SEGMENT: usize = 1 << ID_BITS;
const ID_MASK: u32 = (1 << ID_BITS) - 1;
/// Five slots for every four ids: even a segment where every id has a key is at most 80%
/// full, so open addressing always finds an empty slot within a few.
const SLOTS: usize = IDS_PER_SEGMENT / 4 * 5;
/// The rest of a slot: a fingerprint of the key's hash, never zero (zero marks an empty slot).
const FINGERPRINT_BITS: u32 = u32::BITS - ID_BITS;
const FINGERPRINT_MAX: u64 = (1 << FINGERPRINT_BITS) - 1;

/// A dedup key's hash, as the index uses it. Keyed afresh by each process, so nobody can
/// choose message ids that collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    /// Where a probe starts, the same in every segment: the hash's low 32 bits scaled to
    /// the slot count.
    fn home(self) -> usize {
        (((self.0 & 0xffff_ffff) * SLOTS as u64) >> 32) as usize
    }

    /// From the hash's high bits, independent of [`KeyHash::home`].
    fn fingerprint(self) -> u32 {
        ((self.0 >> (u64::BITS - FINGERPRINT_BITS)) % FINGERPRINT_MAX + 1) as u32
    }
}

pub(super) struct DedupIndex {
    hasher: Hashing,
    /// By the id's high bits (the segment number).
    segments: BTreeMap<u64, Segment>,
}

enum Hashing {
    Keyed(RandomState),
    /// Every key gets this hash, so that every lookup meets every key stored: for testing
    /// that candidates are confirmed against their rows.
    #[cfg(test)]
    Same(u64),
}

struct Segment {
    slots: Box<[u32]>,
    /// The receive time of the newest key here: once that has left the window, all have.
    newest: DateTime<Utc>,
}

impl DedupIndex {
    pub(super) fn new() -> Self {
        Self {
            hasher: Hashing::Keyed(RandomState::new()),
            segments: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn colliding() -> Self {
        Self {
            hasher: Hashing::Same(0x5eed),
            segments: BTreeMap::new(),
        }
    }

    pub(super) fn hash(&self, key: &str) -> KeyHash {
        match &self.hasher {
            Hashing::Keyed(state) => KeyHash(state.hash_one(key)),
            #[cfg(test)]
            Hashing::Same(hash) => KeyHash(*hash),
        }
    }

    /// Ids of stored events whose key may be the one hashed, newest segment first. Every
    /// stored event with that key received since the oldest segment kept is among them; a
    /// few others may be too, so the caller confirms each against its row.
    pub(super) fn candidates(&self, hash: KeyHash) -> Vec<i64> {
        let fingerprint = hash.fingerprint();
        let mut ids = Vec::new();
        for (&number, segment) in self.segments.iter().rev() {
            let mut at = hash.home();
            loop {
                let slot = segment.slots[at];
                if slot == 0 {
                    break;
                }
                if slot >> ID_BITS == fingerprint {
                    ids.push(((number << ID_BITS) | u64::from(slot & ID_MASK)) as i64);
                }
                at = (at + 1) % SLOTS;
            }
        }
        ids
    }

    /// Remember that the event `id`, received at `received_at`, has the key hashed.
    pub(super) fn insert(&mut self, hash: KeyHash, id: i64, received_at: DateTime<Utc>) {
        let id = id as u64;
        let segment = self
            .segments
            .entry(id >> ID_BITS)
            .or_insert_with(|| Segment {
                slots: vec![0; SLOTS].into_boxed_slice(),
                newest: received_at,
            });
        segment.newest = segment.newest.max(received_at);
        let mut at = hash.home();
        while segment.slots[at] != 0 {
            at = (at + 1) % SLOTS;
        }
        segment.slots[at] = (hash.fingerprint() << ID_BITS) | (id as u32 & ID_MASK);
    }

    /// Free the oldest segments whose every key was received before `cutoff`.
    pub(super) fn forget_before(&mut self, cutoff: DateTime<Utc>) {
        while let Some(oldest) = self.segments.first_entry()
            && oldest.get().newest < cutoff
        {
            oldest.remove();
        }
    }

    /// Bytes held by the segments, for the start-up log line.
    pub(super) fn bytes(&self) -> usize {
        self.segments.len() * SLOTS * size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn a_key_finds_every_event_stored_under_it() {
        let mut index = DedupIndex::new();
        let (a, b) = (index.hash("a"), index.hash("b"));
        index.insert(a, 7, now());
        index.insert(b, 8, now());
        // The same key again, in a later segment.
        index.insert(a, 7 + IDS_PER_SEGMENT as i64, now());
        assert_eq!(index.candidates(a), [7 + IDS_PER_SEGMENT as i64, 7]);
        assert_eq!(index.candidates(b), [8]);
        assert_eq!(index.candidates(index.hash("c")), Vec::<i64>::new());
    }

    #[test]
    fn a_full_segment_still_finds_each_key_with_few_strangers() {
        let mut index = DedupIndex::new();
        let keys: Vec<String> = (0..IDS_PER_SEGMENT).map(|i| format!("key-{i}")).collect();
        for (id, key) in keys.iter().enumerate() {
            index.insert(index.hash(key), id as i64, now());
        }
        let mut strangers = 0;
        for (id, key) in keys.iter().enumerate().step_by(97) {
            let candidates = index.candidates(index.hash(key));
            assert!(candidates.contains(&(id as i64)), "{key}");
            strangers += candidates.len() - 1;
        }
        let misses: usize = (0..10_000)
            .map(|i| index.candidates(index.hash(&format!("absent-{i}"))).len())
            .sum();
        // A probe passes about a dozen slots of a full segment, each a stranger with a
        // chance of one in 2^14: well under 1% of lookups meet one.
        assert!(strangers < 30, "{strangers} strangers");
        assert!(misses < 100, "{misses} strangers in 10,000 lookups");
        assert_eq!(index.bytes(), SLOTS * 4);
    }

    #[test]
    fn colliding_hashes_give_every_id_to_confirm() {
        let mut index = DedupIndex::new();
        let (one, other) = (
            KeyHash(0xabcd_0000_0000_0000),
            KeyHash(0xabcd_0000_0000_0001),
        );
        assert_eq!(one.home(), other.home());
        assert_eq!(one.fingerprint(), other.fingerprint());
        index.insert(one, 1, now());
        index.insert(other, 2, now());
        assert_eq!(index.candidates(one), [1, 2]);
        assert_eq!(index.candidates(other), [1, 2]);
    }

    #[test]
    fn segments_are_forgotten_once_their_newest_key_is_out_of_the_window() {
        let mut index = DedupIndex::new();
        let key = index.hash("k");
        let old = now() - Duration::days(40);
        index.insert(key, 1, old);
        index.insert(key, 2, old + Duration::days(20));
        index.insert(key, 1 + IDS_PER_SEGMENT as i64, old);
        index.insert(key, 1 + 2 * IDS_PER_SEGMENT as i64, now());

        index.forget_before(old + Duration::days(10));
        // The first segment holds a key from day 20, so it stays; the second goes only once
        // the first has gone, and the oldest segments go first.
        assert_eq!(index.candidates(key).len(), 4);
        index.forget_before(old + Duration::days(30));
        assert_eq!(index.candidates(key), [1 + 2 * IDS_PER_SEGMENT as i64]);
        assert_eq!(index.bytes(), SLOTS * 4);
    }
}
