//! Who is in which room on this backend, and delivery of frames to them.
//!
//! This is plain bookkeeping with no I/O: each member is a client id, a nickname and the
//! sending half of that client's outgoing queue. Cluster-wide membership lives in
//! [`crate::fanout`].

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Identifies one WebSocket connection on this backend.
pub type ClientId = u64;

/// The queue of JSON text frames waiting to be written to one client.
pub type Outbox = mpsc::Sender<Arc<str>>;

/// Frames a client may have queued before further ones are dropped (a slow reader loses
/// messages rather than stalling the room).
pub const OUTBOX_CAPACITY: usize = 256;

struct Member {
    nick: String,
    outbox: Outbox,
}

/// The nickname is already used in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NickTaken;

/// The local members of every room; empty rooms are forgotten.
#[derive(Default)]
pub struct Rooms {
    rooms: HashMap<String, HashMap<ClientId, Member>>,
    room_of: HashMap<ClientId, String>,
}

impl Rooms {
    /// Adds `client` to `room` as `nick`. A client is in at most one room: callers leave the
    /// previous room first (see [`Rooms::leave`]).
    pub fn join(
        &mut self,
        client: ClientId,
        room: &str,
        nick: &str,
        outbox: Outbox,
    ) -> Result<(), NickTaken> {
        debug_assert!(!self.room_of.contains_key(&client), "leave before joining");
        let members = self.rooms.entry(room.to_owned()).or_default();
        if members.values().any(|m| m.nick == nick) {
            // The room had a member, so `entry` created nothing.
            return Err(NickTaken);
        }
        members.insert(
            client,
            Member {
                nick: nick.to_owned(),
                outbox,
            },
        );
        self.room_of.insert(client, room.to_owned());
        Ok(())
    }

    /// Removes `client` from its room; returns `(room, nick)` when it was in one.
    pub fn leave(&mut self, client: ClientId) -> Option<(String, String)> {
        let room = self.room_of.remove(&client)?;
        let members = self.rooms.get_mut(&room)?;
        let member = members.remove(&client)?;
        if members.is_empty() {
            self.rooms.remove(&room);
        }
        Some((room, member.nick))
    }

    /// The room and nickname of `client`, when it has joined one.
    pub fn whereabouts(&self, client: ClientId) -> Option<(String, String)> {
        let room = self.room_of.get(&client)?;
        let member = self.rooms.get(room)?.get(&client)?;
        Some((room.clone(), member.nick.clone()))
    }

    /// The nicknames in `room` on this backend, sorted.
    pub fn members(&self, room: &str) -> Vec<String> {
        let mut nicks: Vec<String> = self
            .rooms
            .get(room)
            .map(|members| members.values().map(|m| m.nick.clone()).collect())
            .unwrap_or_default();
        nicks.sort();
        nicks
    }

    /// Queues `frame` for every member of `room` except the one named `skip` and, when `only`
    /// is given, those it does not name; returns how many members it was queued for. A full or
    /// closed outbox is skipped.
    pub fn deliver(
        &self,
        room: &str,
        skip: Option<&str>,
        only: Option<&[String]>,
        frame: &Arc<str>,
    ) -> usize {
        let Some(members) = self.rooms.get(room) else {
            return 0;
        };
        members
            .values()
            .filter(|m| Some(m.nick.as_str()) != skip)
            .filter(|m| only.is_none_or(|nicks| nicks.contains(&m.nick)))
            .filter(|m| match m.outbox.try_send(frame.clone()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(nick = %m.nick, room, "frame dropped: {e}");
                    false
                }
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, mpsc::Receiver<Arc<str>>) {
        mpsc::channel(OUTBOX_CAPACITY)
    }

    fn drain(rx: &mut mpsc::Receiver<Arc<str>>) -> Vec<String> {
        let mut frames = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            frames.push(frame.to_string());
        }
        frames
    }

    #[test]
    fn join_lists_members_sorted() {
        let mut rooms = Rooms::default();
        rooms.join(1, "lobby", "zed", outbox().0).unwrap();
        rooms.join(2, "lobby", "ann", outbox().0).unwrap();
        rooms.join(3, "other", "bob", outbox().0).unwrap();
        assert_eq!(rooms.members("lobby"), ["ann", "zed"]);
        assert_eq!(rooms.members("other"), ["bob"]);
        assert!(rooms.members("nowhere").is_empty());
    }

    #[test]
    fn nicknames_are_unique_per_room() {
        let mut rooms = Rooms::default();
        rooms.join(1, "lobby", "ann", outbox().0).unwrap();
        assert_eq!(rooms.join(2, "lobby", "ann", outbox().0), Err(NickTaken));
        rooms.join(2, "elsewhere", "ann", outbox().0).unwrap();
        assert_eq!(
            rooms.whereabouts(2),
            Some(("elsewhere".into(), "ann".into()))
        );
    }

    #[test]
    fn leave_reports_and_forgets() {
        let mut rooms = Rooms::default();
        rooms.join(1, "lobby", "ann", outbox().0).unwrap();
        rooms.join(2, "lobby", "bob", outbox().0).unwrap();
        assert_eq!(rooms.leave(1), Some(("lobby".into(), "ann".into())));
        assert_eq!(rooms.leave(1), None);
        assert_eq!(rooms.whereabouts(1), None);
        assert_eq!(rooms.members("lobby"), ["bob"]);
        rooms.leave(2);
        assert!(rooms.rooms.is_empty(), "empty rooms are dropped");
        // The nickname is free again.
        rooms.join(3, "lobby", "ann", outbox().0).unwrap();
    }

    #[test]
    fn a_refused_join_leaves_no_empty_room() {
        let mut rooms = Rooms::default();
        rooms.join(1, "lobby", "ann", outbox().0).unwrap();
        assert!(rooms.join(2, "lobby", "ann", outbox().0).is_err());
        assert_eq!(rooms.whereabouts(2), None);
        rooms.leave(1);
        assert!(rooms.rooms.is_empty());
    }

    #[test]
    fn deliver_reaches_the_room_except_skip() {
        let mut rooms = Rooms::default();
        let (ann_tx, mut ann_rx) = outbox();
        let (bob_tx, mut bob_rx) = outbox();
        let (cat_tx, mut cat_rx) = outbox();
        rooms.join(1, "lobby", "ann", ann_tx).unwrap();
        rooms.join(2, "lobby", "bob", bob_tx).unwrap();
        rooms.join(3, "other", "cat", cat_tx).unwrap();

        let frame: Arc<str> = Arc::from("hello");
        assert_eq!(rooms.deliver("lobby", None, None, &frame), 2);
        assert_eq!(rooms.deliver("lobby", Some("ann"), None, &frame), 1);
        assert_eq!(rooms.deliver("empty", None, None, &frame), 0);
        assert_eq!(drain(&mut ann_rx), ["hello"]);
        assert_eq!(drain(&mut bob_rx), ["hello", "hello"]);
        assert!(drain(&mut cat_rx).is_empty());
    }

    #[test]
    fn deliver_reaches_only_the_members_named() {
        let mut rooms = Rooms::default();
        let (ann_tx, mut ann_rx) = outbox();
        let (bob_tx, mut bob_rx) = outbox();
        rooms.join(1, "lobby", "ann", ann_tx).unwrap();
        rooms.join(2, "lobby", "bob", bob_tx).unwrap();

        let frame: Arc<str> = Arc::from("before bob");
        assert_eq!(
            rooms.deliver("lobby", None, Some(&["ann".into()]), &frame),
            1
        );
        assert_eq!(drain(&mut ann_rx), ["before bob"]);
        assert!(drain(&mut bob_rx).is_empty());
    }

    #[test]
    fn deliver_skips_full_and_closed_outboxes() {
        let mut rooms = Rooms::default();
        let (full_tx, _full_rx) = mpsc::channel(1);
        let (closed_tx, closed_rx) = outbox();
        drop(closed_rx);
        rooms.join(1, "lobby", "full", full_tx).unwrap();
        rooms.join(2, "lobby", "gone", closed_tx).unwrap();
        let frame: Arc<str> = Arc::from("x");
        assert_eq!(
            rooms.deliver("lobby", None, None, &frame),
            1,
            "first fills the queue"
        );
        assert_eq!(rooms.deliver("lobby", None, None, &frame), 0);
    }
}
