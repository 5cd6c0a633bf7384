//! Requests for conversations owned by another shard of this host: handoff of a session that
//! uses no conversation yet, else routing through [`PeerMessage`]s to a proxy session on the
//! owner (see `peer.rs`), and the owner's side of those messages.

use super::peer::{MapVersion, PeerMessage, RouteReleased, SessionHandoff};
use super::session::{ConnId, Session, SessionPhase};
use super::store::BodyStore;
use super::{Action, Opened, Shard};
use crate::ids::ShardId;
use crate::protocol::{ErrorCode, ErrorSubject, Event, Request};

impl<S: BodyStore> Shard<S> {
    /// Routes a request for a conversation owned by `owner` (another shard of this host): a
    /// session that uses no conversation yet moves there; any other is served through a proxy
    /// session on the owner.
    pub(super) fn route_to_owner(
        &mut self,
        conn: ConnId,
        owner: ShardId,
        request: Request,
        about: ErrorSubject,
    ) {
        let Some(session) = self.session(conn) else {
            return;
        };
        if session.remote.is_some() {
            // A proxy only receives requests its subscriber shard computed for this owner
            // under the same map (checked on arrival); anything else is a routing bug.
            self.send_error(
                conn,
                ErrorCode::INTERNAL,
                about,
                "routed to a shard that does not own the conversation",
            );
            return;
        }
        if session.is_unattached() && self.is_local(owner) {
            let Some(session) = self.take_session(conn) else {
                return;
            };
            let Some(grant) = session.grant else {
                return;
            };
            let state = SessionHandoff {
                session_id: session.session_id,
                loopback: session.loopback,
                grant,
                queued_bytes: session.queued_bytes,
                request,
            };
            self.actions.push_back(Action::HandOff {
                conn,
                to: owner,
                state,
            });
            return;
        }
        let talks_max = usize::from(self.config.talk_streams_max);
        let subs_max = usize::from(self.config.subs_max);
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        match &request {
            Request::TalkStart { stream, .. } => {
                if session.talk_count() >= talks_max {
                    self.send_error(
                        conn,
                        ErrorCode::TOO_MANY_OPEN_MESSAGES,
                        about,
                        "too many talk streams open on this connection",
                    );
                    return self.remember_refused_here(conn, *stream);
                }
                session.refused.retain(|h| h != stream);
                session.reported_unknown.retain(|h| h != stream);
                session.remote_talks.push((*stream, owner));
            }
            Request::Listen { sub, .. } => {
                if session.all_sub_count() >= subs_max {
                    self.send_error(
                        conn,
                        ErrorCode::TOO_MANY_CONVERSATIONS,
                        about,
                        "too many subscriptions open on this connection",
                    );
                    return;
                }
                session.remote_subs.push((*sub, owner));
            }
            _ => {}
        }
        if !session.owners.contains(&owner) {
            if session.owners.is_empty() && session.queued_bytes > 0 {
                // Bytes queued before the first owner came are this shard's.
                session.sent_log.push_back((None, session.queued_bytes));
            }
            session.owners.push(owner);
            let Some(grant) = session.grant.clone() else {
                return;
            };
            let session_id = session.session_id;
            self.actions.push_back(Action::ToShard {
                shard: owner,
                msg: PeerMessage::Attach {
                    conn,
                    session_id,
                    grant,
                },
            });
        }
        self.forward(conn, owner, request);
    }

    /// The owner serving a talk frame, talk end or unlisten of this connection, when it is
    /// another shard.
    pub(super) fn remote_route_of(&self, conn: ConnId, request: &Request) -> Option<ShardId> {
        let session = self.session(conn)?;
        match request {
            Request::TalkFrame { stream, .. } | Request::TalkEnd { stream, .. } => session
                .remote_talks
                .iter()
                .find(|t| t.0 == *stream)
                .map(|t| t.1),
            Request::Unlisten { sub } => session
                .remote_subs
                .iter()
                .find(|s| s.0 == *sub)
                .map(|s| s.1),
            _ => None,
        }
    }

    pub(super) fn forward(&mut self, conn: ConnId, owner: ShardId, request: Request) {
        let map = self.map_version();
        self.actions.push_back(Action::ToShard {
            shard: owner,
            msg: PeerMessage::Request { conn, map, request },
        });
    }

    /// The cluster map's version, which every routed request carries.
    pub fn map_version(&self) -> MapVersion {
        MapVersion {
            epoch: self.cluster.epoch(),
            checksum: self.cluster.checksum(),
        }
    }

    /// Tells a proxy session's subscriber shard that a route is over.
    pub(super) fn release_route(&mut self, conn: ConnId, route: RouteReleased, refused: bool) {
        if let Some((shard, their)) = self.session(conn).and_then(|s| s.remote) {
            self.actions.push_back(Action::ToShard {
                shard,
                msg: PeerMessage::Released {
                    conn: their,
                    route,
                    refused,
                },
            });
        }
    }

    /// Credits `n` written bytes to whoever produced them: owners elsewhere hear `Written`.
    pub(super) fn attribute_written(&mut self, conn: ConnId, n: usize) {
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        let mut left = n;
        let mut credits: Vec<(ShardId, usize)> = Vec::new();
        while left > 0
            && let Some((source, queued)) = session.sent_log.front_mut()
        {
            let take = (*queued).min(left);
            *queued -= take;
            left -= take;
            if let Some(owner) = *source {
                match credits.iter_mut().find(|c| c.0 == owner) {
                    Some(credit) => credit.1 += take,
                    None => credits.push((owner, take)),
                }
            }
            if *queued == 0 {
                session.sent_log.pop_front();
            }
        }
        for (shard, n) in credits {
            self.actions.push_back(Action::ToShard {
                shard,
                msg: PeerMessage::Written { conn, n },
            });
        }
    }

    /// A message from another shard of this host.
    pub fn handle_peer(&mut self, now_us: u64, from: ShardId, msg: PeerMessage) {
        self.now_us = now_us;
        match msg {
            PeerMessage::Attach {
                conn,
                session_id,
                grant,
            } => {
                if self.proxies.contains_key(&(from, conn)) {
                    return self.finish_input();
                }
                if self.session_count >= self.config.connections_max {
                    self.refuse_proxy(from, conn);
                    return self.finish_input();
                }
                let mut session = Session::new(false, session_id, now_us);
                session.phase = SessionPhase::Open;
                session.sender = grant.subject.as_str().to_owned();
                session.grant = Some(grant);
                session.remote = Some((from, conn));
                let proxy = self.insert_session(session);
                self.proxies.insert((from, conn), proxy);
            }
            PeerMessage::Request { conn, map, request } => {
                let Some(&proxy) = self.proxies.get(&(from, conn)) else {
                    return self.finish_input();
                };
                if let Some(session) = self.session_mut(proxy) {
                    session.last_heard_us = now_us;
                }
                self.route_or_park(proxy, map, request);
            }
            PeerMessage::Written { conn, n } => {
                if let Some(&proxy) = self.proxies.get(&(from, conn))
                    && let Some(session) = self.session_mut(proxy)
                {
                    session.queued_bytes = session.queued_bytes.saturating_sub(n);
                    if session.has_catch_up_work() {
                        self.pump_queue.push(proxy);
                    }
                }
            }
            PeerMessage::Detach { conn } => {
                if let Some(proxy) = self.proxies.remove(&(from, conn)) {
                    self.remove_session(proxy);
                }
            }
            PeerMessage::Deliver { conn, bytes } if Self::is_uplink(conn) => {
                self.uplink_deliver(from, conn, bytes);
            }
            PeerMessage::Close { conn } if Self::is_uplink(conn) => self.uplink_closed(from, conn),
            // A mirror's subscription ended; its events (unlistened, error) said so already.
            PeerMessage::Released { conn, .. } if Self::is_uplink(conn) => {}
            PeerMessage::Deliver { conn, bytes } => {
                let hard_max = self.config.send_queue_bytes_hard_max;
                if let Some(session) = self.session_mut(conn) {
                    session.queued_bytes += bytes.len();
                    session.log_sent(Some(from), bytes.len());
                    let over = session.queued_bytes > hard_max;
                    self.actions.push_back(Action::Send { conn, bytes });
                    if over {
                        self.close(conn);
                    }
                }
            }
            PeerMessage::Released {
                conn,
                route,
                refused,
            } => {
                if let Some(session) = self.session_mut(conn) {
                    match route {
                        RouteReleased::TalkStream(stream) => {
                            session.remote_talks.retain(|t| t.0 != stream);
                            if refused {
                                self.remember_refused_here(conn, stream);
                            }
                        }
                        RouteReleased::Sub(sub) => session.remote_subs.retain(|s| s.0 != sub),
                    }
                }
            }
            PeerMessage::Close { conn } => self.close(conn),
        }
        self.finish_input();
    }

    /// The link to `peer` (a shard of another host) broke, or its host died: its proxies here
    /// are dropped (their talkers' messages wait for a resume like any vanished talker), the
    /// mirrors fed by it subscribe again on the next tick, and this shard's connections hear
    /// `owner_unavailable` for every talk stream it served (the client resumes elsewhere).
    pub fn peer_lost(&mut self, now_us: u64, peer: ShardId) {
        self.now_us = now_us;
        let proxies: Vec<ConnId> = self
            .proxies
            .iter()
            .filter(|((from, _), _)| *from == peer)
            .map(|(_, proxy)| *proxy)
            .collect();
        for proxy in proxies {
            self.remove_session(proxy);
        }
        self.uplink_lost(peer);
        self.mirrors.retry = true;
        let conns: Vec<ConnId> = self
            .conn_ids()
            .filter(|c| self.session(*c).is_some_and(|s| s.owners.contains(&peer)))
            .collect();
        for conn in conns {
            let Some(session) = self.session_mut(conn) else {
                continue;
            };
            session.owners.retain(|o| *o != peer);
            let mut lost = Vec::new();
            session.remote_talks.retain(|(stream, owner)| {
                if *owner == peer {
                    lost.push(*stream);
                }
                *owner != peer
            });
            session.remote_subs.retain(|(_, owner)| *owner != peer);
            for stream in lost {
                self.send_error(
                    conn,
                    ErrorCode::OWNER_UNAVAILABLE,
                    ErrorSubject::TalkStream(stream),
                    "the host that owns the conversation is unreachable; resume the message",
                );
                // Frames the client sent before it heard this are dropped without a word.
                self.remember_refused_here(conn, stream);
            }
        }
        self.finish_input();
    }

    fn refuse_proxy(&mut self, shard: ShardId, conn: ConnId) {
        let goodbye = match self.connection_refusal() {
            Opened::Refused { goodbye } => goodbye,
            Opened::Accepted(_) => return,
        };
        self.actions.push_back(Action::ToShard {
            shard,
            msg: PeerMessage::Deliver {
                conn,
                bytes: goodbye,
            },
        });
        self.actions.push_back(Action::ToShard {
            shard,
            msg: PeerMessage::Close { conn },
        });
    }

    /// A request routed under another ownership map: refused, its route released.
    pub(super) fn refuse_stale_map(&mut self, proxy: ConnId, request: &Request) {
        let (about, route) = match request {
            Request::TalkStart { stream, .. } => (
                ErrorSubject::TalkStream(*stream),
                Some(RouteReleased::TalkStream(*stream)),
            ),
            Request::Listen { sub, .. } => {
                (ErrorSubject::Sub(*sub), Some(RouteReleased::Sub(*sub)))
            }
            Request::History { request, .. } => (ErrorSubject::HistoryRequest(*request), None),
            _ => return,
        };
        self.send_event(
            proxy,
            &Event::Error {
                code: ErrorCode::MAP_CHANGED,
                about,
                text: "the ownership map changed; retry".into(),
            },
        );
        if let Some(route) = route {
            // Frames already on their way after a refused start are dropped without a word.
            let refused = matches!(route, RouteReleased::TalkStream(_));
            if let RouteReleased::TalkStream(stream) = route {
                self.remember_refused_here(proxy, stream);
            }
            self.release_route(proxy, route, refused);
        }
    }
}
