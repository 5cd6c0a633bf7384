//! The hello: protocol version, token verification (or dev mode), and the per-request
//! authorisation of a session's grant.

use super::session::{ConnId, SessionPhase};
use super::store::BodyStore;
use super::{Shard, dev_grant};
use crate::ids::ConvName;
use crate::protocol::{ErrorCode, ErrorSubject, Event, PROTOCOL_VERSION};
use crate::token::{Right, TokenError};

impl<S: BodyStore> Shard<S> {
    pub(super) fn hello(&mut self, conn: ConnId, version: u16, token: &[u8]) {
        if version < PROTOCOL_VERSION {
            self.fail_connection(
                conn,
                ErrorCode::UNSUPPORTED_VERSION,
                "this relay speaks protocol version 1",
            );
            return;
        }
        let now_s = self.now_us / 1_000_000;
        let loopback = self.session(conn).is_some_and(|s| s.loopback);
        let grant = if token.is_empty() {
            if !(self.config.dev_mode && loopback) {
                self.fail_connection(conn, ErrorCode::TOKEN_MISSING, "a token is required");
                return;
            }
            dev_grant(&self.keyring)
        } else {
            let verified = std::str::from_utf8(token)
                .map_err(|_| TokenError::NotAToken)
                .and_then(|text| self.keyring.verify(text, now_s));
            match verified {
                Ok(grant) => grant,
                Err(error @ TokenError::Expired { .. }) => {
                    self.fail_connection(conn, ErrorCode::TOKEN_EXPIRED, &error.to_string());
                    return;
                }
                Err(error) => {
                    self.fail_connection(conn, ErrorCode::TOKEN_INVALID, &error.to_string());
                    return;
                }
            }
        };
        let Some(session) = self.session_mut(conn) else {
            return;
        };
        session.phase = SessionPhase::Open;
        session.sender = grant.subject.as_str().to_owned();
        session.grant = Some(grant);
        let session_id = session.session_id;
        let event = Event::HelloAccepted {
            version: PROTOCOL_VERSION,
            host: self.shard.host,
            session: session_id,
            server_time_us: self.now_us,
            limits: self.config.session_limits(),
        };
        self.send_event(conn, &event);
        if self.is_shutting_down() {
            // It reached a draining relay: send it on at once.
            self.send_go_away(conn);
        }
    }

    /// Checks the session's grant for `right` on `conv`; on refusal the error is sent (and
    /// the connection closed for an expired token) and `false` returned.
    pub(super) fn authorize(
        &mut self,
        conn: ConnId,
        rights: &[Right],
        conv: &ConvName,
        about: ErrorSubject,
    ) -> bool {
        let now_s = self.now_us / 1_000_000;
        let Some(grant) = self.session(conn).and_then(|s| s.grant.as_ref()) else {
            return false;
        };
        if let Err(error) = grant.check_expiry(now_s) {
            let text = error.to_string();
            self.fail_connection(conn, ErrorCode::TOKEN_EXPIRED, &text);
            return false;
        }
        let refusal = rights
            .iter()
            .find_map(|right| grant.authorize(*right, conv).err());
        match refusal {
            None => true,
            Some(error) => {
                let code = match error {
                    TokenError::OutOfScope(_) => ErrorCode::OUT_OF_SCOPE,
                    _ => ErrorCode::RIGHT_MISSING,
                };
                let text = error.to_string();
                self.send_error(conn, code, about, &text);
                false
            }
        }
    }
}
