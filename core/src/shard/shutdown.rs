//! Draining: `go_away` to every client (naming live hosts in turn), other hosts'
//! subscriptions released so their mirrors hold the messages in progress for a handover, the
//! open messages cut, and connections closed after the linger.

use super::session::{ConnId, SessionPhase};
use super::store::BodyStore;
use super::{RouteReleased, Shard};
use crate::protocol::{ErrorCode, ErrorSubject, Event, GoAwayReason};

impl<S: BodyStore> Shard<S> {
    /// Starts draining: every session gets `go_away` (naming no address: any host will do),
    /// new talk streams and subscriptions are refused (`shutting_down`), open messages end
    /// truncated, and connections close after `shutdown_linger_ms`. A single host drains
    /// this way; a cluster host uses [`Shard::begin_shutdown_with`].
    pub fn begin_shutdown(&mut self, now_us: u64) {
        self.begin_shutdown_with(now_us, &[]);
    }

    /// [`Shard::begin_shutdown`] for a host whose clients can go on elsewhere: each session's
    /// `go_away` names one of `reconnect_to` (`host:port` client addresses of the hosts still
    /// live), dealt round-robin over the sessions in connection order so the clients spread
    /// over them. Addresses longer than the protocol allows are skipped; with none left the
    /// `go_away` names no address. Only the first call counts.
    pub fn begin_shutdown_with(&mut self, now_us: u64, reconnect_to: &[String]) {
        self.now_us = now_us;
        if self.shutdown_close_at_us.is_some() {
            return;
        }
        self.shutdown_close_at_us =
            Some(now_us.saturating_add(self.config.shutdown_linger_ms * 1000));
        self.shutdown_reconnect_to = reconnect_to
            .iter()
            .filter(|addr| addr.len() <= crate::protocol::ADDRESS_LEN_MAX)
            .cloned()
            .collect();
        let conns: Vec<ConnId> = self.conn_ids().collect();
        for conn in conns {
            if self
                .session(conn)
                .is_some_and(|s| s.phase == SessionPhase::Open && s.remote.is_none())
            {
                self.send_go_away(conn);
            }
        }
        self.release_other_hosts_subscriptions();
        self.truncate_open_messages(ErrorCode::SHUTTING_DOWN, "the relay is draining");
        self.wake_at = None;
        self.finish_input();
    }

    /// Draining: subscriptions of other hosts' shards (their edges' mirrors, their
    /// listeners' catch-ups) end with `shutting_down` before the open messages are cut, so
    /// the mirrors hold those messages for their talkers to resume on the new owner instead
    /// of hearing them end here.
    fn release_other_hosts_subscriptions(&mut self) {
        let host = self.shard.host;
        let remote: Vec<ConnId> = self
            .conn_ids()
            .filter(|c| {
                self.session(*c)
                    .and_then(|s| s.remote)
                    .is_some_and(|(shard, _)| shard.host != host)
            })
            .collect();
        for conn in remote {
            let subs: Vec<(usize, u32)> = self
                .session(conn)
                .map(|s| {
                    s.subs
                        .iter()
                        .enumerate()
                        .filter_map(|(slot, sub)| sub.as_ref().map(|sub| (slot, sub.sub)))
                        .collect()
                })
                .unwrap_or_default();
            for (slot, sub) in subs {
                self.drop_subscription(conn, slot);
                self.send_error(
                    conn,
                    ErrorCode::SHUTTING_DOWN,
                    ErrorSubject::Sub(sub),
                    "the owner host is draining; listen on the new owner",
                );
                self.release_route(conn, RouteReleased::Sub(sub), false);
            }
        }
    }

    /// Tells a client of a draining shard to go: `go_away` naming the next live host's
    /// address in turn (none when there is none). A client that says hello while the shard
    /// drains hears it right after `hello_accepted`.
    pub(super) fn send_go_away(&mut self, conn: ConnId) {
        let reconnect_to = if self.shutdown_reconnect_to.is_empty() {
            String::new()
        } else {
            let i = self.shutdown_reconnect_next % self.shutdown_reconnect_to.len();
            self.shutdown_reconnect_next = self.shutdown_reconnect_next.wrapping_add(1);
            self.shutdown_reconnect_to[i].clone()
        };
        self.send_event(
            conn,
            &Event::GoAway {
                reason: GoAwayReason::DRAINING,
                reconnect_to,
            },
        );
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        self.shutdown_close_at_us.is_some()
    }
}
