//! The hub: joins, leaves and messages, delivered to this backend's members directly or, with
//! Redis, to the members on every backend.
//!
//! With Redis every room event is published as an [`Event`] on one channel, [`CHANNEL`]; each
//! backend (the publisher too) subscribes to it and delivers the events to its own members.
//! Room membership across the cluster is a Redis hash per room, `wasp-chat:members:<room>`,
//! mapping each nickname to the backend that holds it, so nicknames are unique cluster-wide and
//! member lists cover every backend. A backend removes its own entries when it starts and when
//! it stops, so backend names (`--name`) must be unique within a cluster.

use crate::protocol::{PresenceEvent, ServerMessage};
use crate::rooms::{ClientId, Outbox, Rooms};
use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use redis::AsyncTypedCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// The Redis pub/sub channel carrying every room's events.
pub const CHANNEL: &str = "wasp-chat:events";
const MEMBERS_PREFIX: &str = "wasp-chat:members:";

/// One room event on its way to the room's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub room: String,
    /// The member that must not receive it (who caused a presence event).
    pub skip: Option<String>,
    pub message: ServerMessage,
}

/// Routes room events to local members, through Redis when configured.
pub struct Hub {
    backend: String,
    rooms: Mutex<Rooms>,
    redis: Option<MultiplexedConnection>,
}

impl Hub {
    /// A hub for a single backend.
    pub fn local(backend: String) -> Arc<Hub> {
        Arc::new(Hub {
            backend,
            rooms: Mutex::default(),
            redis: None,
        })
    }

    /// A hub sharing rooms with other backends through Redis at `url`. Forgets memberships a
    /// previous run of this backend left behind, then subscribes to [`CHANNEL`]; the returned
    /// task ends with an error when the subscription is lost.
    pub async fn with_redis(
        backend: String,
        url: &str,
    ) -> anyhow::Result<(Arc<Hub>, JoinHandle<anyhow::Result<()>>)> {
        let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        let hub = Arc::new(Hub {
            backend,
            rooms: Mutex::default(),
            redis: Some(conn),
        });
        hub.forget_own_members().await?;

        let subscriber = {
            let hub = hub.clone();
            let mut messages = pubsub.into_on_message();
            tokio::spawn(async move {
                while let Some(msg) = messages.next().await {
                    match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
                        Ok(event) => hub.deliver(&event),
                        Err(e) => tracing::warn!("ignoring a bad event on {CHANNEL}: {e}"),
                    }
                }
                Err(anyhow!("lost the Redis subscription to {CHANNEL}"))
            })
        };
        Ok((hub, subscriber))
    }

    /// This backend's name, as reported in `joined`.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        // Rooms are only mutated by short, non-panicking sections; a poisoned lock still holds
        // consistent data.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `client` in `room` as `nick`, leaving its current room first. Queues `joined` to
    /// the client and a `presence` join to the others. `Err` carries the reason for the client.
    pub async fn join(
        &self,
        client: ClientId,
        room: &str,
        nick: &str,
        outbox: &Outbox,
    ) -> Result<(), String> {
        self.leave(client).await;
        let taken = || format!("the nick {nick:?} is already taken in room {room:?}");

        let members = match &self.redis {
            None => None,
            Some(conn) => {
                let key = members_key(room);
                let claimed = conn
                    .clone()
                    .hset_nx(&key, nick, &self.backend)
                    .await
                    .map_err(unavailable)?;
                if !claimed {
                    return Err(taken());
                }
                match conn.clone().hkeys(&key).await {
                    Ok(mut nicks) => {
                        nicks.sort();
                        Some(nicks)
                    }
                    Err(e) => {
                        self.release(room, nick).await;
                        return Err(unavailable(e));
                    }
                }
            }
        };

        let joined = {
            let mut rooms = self.rooms();
            rooms.join(client, room, nick, outbox.clone()).map(|()| {
                let members = members.unwrap_or_else(|| rooms.members(room));
                let joined = ServerMessage::Joined {
                    room: room.to_owned(),
                    nick: nick.to_owned(),
                    members: members.clone(),
                    backend: self.backend.clone(),
                };
                // Queued under the lock, so `joined` comes before any event of the new room.
                let _ = outbox.try_send(joined.to_json().into());
                members
            })
        };
        let Ok(members) = joined else {
            self.release(room, nick).await;
            return Err(taken());
        };

        self.publish(Event {
            room: room.to_owned(),
            skip: Some(nick.to_owned()),
            message: ServerMessage::Presence {
                room: room.to_owned(),
                event: PresenceEvent::Join,
                nick: nick.to_owned(),
                members,
            },
        })
        .await;
        Ok(())
    }

    /// Takes `client` out of its room, if any, and tells the room. Returns the `presence`
    /// leave event, which the caller may show the leaving client as confirmation.
    pub async fn leave(&self, client: ClientId) -> Option<ServerMessage> {
        let (room, nick) = self.rooms().leave(client)?;
        let members = match &self.redis {
            None => self.rooms().members(&room),
            Some(conn) => {
                self.release(&room, &nick).await;
                match conn.clone().hkeys(members_key(&room)).await {
                    Ok(mut nicks) => {
                        nicks.sort();
                        nicks
                    }
                    Err(e) => {
                        tracing::warn!("Redis: {e}; listing this backend's members only");
                        self.rooms().members(&room)
                    }
                }
            }
        };
        let message = ServerMessage::Presence {
            room: room.clone(),
            event: PresenceEvent::Leave,
            nick: nick.clone(),
            members,
        };
        self.publish(Event {
            room,
            skip: Some(nick),
            message: message.clone(),
        })
        .await;
        Some(message)
    }

    /// Sends `text` from `client` to its room (the sender included).
    pub async fn say(&self, client: ClientId, text: String) -> Result<(), String> {
        let (room, nick) = self
            .rooms()
            .whereabouts(client)
            .ok_or_else(|| "join a room first".to_owned())?;
        let message = ServerMessage::Message {
            room: room.clone(),
            nick,
            text,
            ts: now_ms(),
        };
        self.publish(Event {
            room,
            skip: None,
            message,
        })
        .await;
        Ok(())
    }

    /// Forgets this backend's memberships in Redis (on shutdown).
    pub async fn shutdown(&self) {
        if let Err(e) = self.forget_own_members().await {
            tracing::warn!("could not clear this backend's members in Redis: {e:#}");
        }
    }

    /// Sends `event` to every backend (through Redis) or straight to the local members. When
    /// Redis refuses, the local members still get it.
    async fn publish(&self, event: Event) {
        if let Some(conn) = &self.redis {
            let payload = serde_json::to_string(&event).expect("events always serialize");
            match conn.clone().publish(CHANNEL, payload).await {
                Ok(_) => return,
                Err(e) => tracing::warn!("Redis publish failed, delivering locally only: {e}"),
            }
        }
        self.deliver(&event);
    }

    /// Queues `event` for this backend's members of its room. A presence event goes only to
    /// the members its list names: one published on another backend can arrive here after a
    /// member joined whose `joined` list (read from Redis later) already told it as much.
    fn deliver(&self, event: &Event) {
        let frame: Arc<str> = event.message.to_json().into();
        let only = match &event.message {
            ServerMessage::Presence { members, .. } => Some(members.as_slice()),
            _ => None,
        };
        self.rooms()
            .deliver(&event.room, event.skip.as_deref(), only, &frame);
    }

    async fn release(&self, room: &str, nick: &str) {
        if let Some(conn) = &self.redis
            && let Err(e) = conn.clone().hdel(members_key(room), nick).await
        {
            tracing::warn!("Redis: could not release {nick:?} in {room:?}: {e}");
        }
    }

    /// Removes every membership held by this backend's name from Redis.
    async fn forget_own_members(&self) -> anyhow::Result<()> {
        let Some(conn) = &self.redis else {
            return Ok(());
        };
        let mut conn = conn.clone();
        let keys: Vec<String> = {
            let mut iter = conn.scan_match(format!("{MEMBERS_PREFIX}*")).await?;
            let mut keys = Vec::new();
            while let Some(key) = iter.next_item().await {
                keys.push(key?);
            }
            keys
        };
        for key in keys {
            for (nick, backend) in conn.hgetall(&key).await? {
                if backend == self.backend {
                    conn.hdel(&key, &nick).await?;
                }
            }
        }
        Ok(())
    }
}

fn members_key(room: &str) -> String {
    format!("{MEMBERS_PREFIX}{room}")
}

fn unavailable(e: redis::RedisError) -> String {
    tracing::warn!("Redis: {e}");
    "the chat service is unavailable, try again".to_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::OUTBOX_CAPACITY;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    fn client() -> (Outbox, mpsc::Receiver<Arc<str>>) {
        mpsc::channel(OUTBOX_CAPACITY)
    }

    fn next(rx: &mut mpsc::Receiver<Arc<str>>) -> Value {
        serde_json::from_str(&rx.try_recv().expect("a queued frame")).unwrap()
    }

    #[tokio::test]
    async fn local_join_say_leave() {
        let hub = Hub::local("b1".into());
        let (ann, mut ann_rx) = client();
        let (bob, mut bob_rx) = client();

        hub.join(1, "lobby", "ann", &ann).await.unwrap();
        assert_eq!(
            next(&mut ann_rx),
            json!({"type":"joined","room":"lobby","nick":"ann","members":["ann"],"backend":"b1"})
        );
        hub.join(2, "lobby", "bob", &bob).await.unwrap();
        assert_eq!(next(&mut bob_rx)["members"], json!(["ann", "bob"]));
        assert_eq!(
            next(&mut ann_rx),
            json!({"type":"presence","room":"lobby","event":"join","nick":"bob","members":["ann","bob"]})
        );
        assert!(ann_rx.try_recv().is_err() && bob_rx.try_recv().is_err());

        hub.say(2, "hi".into()).await.unwrap();
        for rx in [&mut ann_rx, &mut bob_rx] {
            let msg = next(rx);
            assert_eq!(
                (msg["nick"].as_str(), msg["text"].as_str()),
                (Some("bob"), Some("hi"))
            );
            assert!(msg["ts"].as_u64().unwrap() > 0);
        }

        let left = hub.leave(2).await.unwrap();
        assert_eq!(
            serde_json::to_value(&left).unwrap(),
            json!({"type":"presence","room":"lobby","event":"leave","nick":"bob","members":["ann"]})
        );
        assert_eq!(next(&mut ann_rx)["event"], "leave");
        assert!(
            bob_rx.try_recv().is_err(),
            "the leaver is no longer in the room"
        );
        assert_eq!(hub.leave(2).await, None);
        assert_eq!(
            hub.say(2, "hello?".into()).await,
            Err("join a room first".into())
        );
    }

    #[tokio::test]
    async fn local_nick_conflict_and_room_switch() {
        let hub = Hub::local("b1".into());
        let (ann, mut ann_rx) = client();
        let (other, _other_rx) = client();
        hub.join(1, "lobby", "ann", &ann).await.unwrap();
        assert!(hub.join(2, "lobby", "ann", &other).await.is_err());

        let (bob, mut bob_rx) = client();
        hub.join(3, "lobby", "bob", &bob).await.unwrap();
        next(&mut ann_rx); // joined
        next(&mut ann_rx); // bob joined
        next(&mut bob_rx); // joined

        // Joining another room leaves the first one.
        hub.join(1, "attic", "ann", &ann).await.unwrap();
        let left = next(&mut bob_rx);
        assert_eq!(
            (left["event"].as_str(), left["members"].clone()),
            (Some("leave"), json!(["bob"]))
        );
        assert_eq!(next(&mut ann_rx)["room"], "attic");
    }
}
