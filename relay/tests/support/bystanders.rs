//! Sessions that must not notice someone else's bad input: a listener and a talker on their
//! own conversation, checked after the bad input with a whole message and a ping each.

use hark_core::ConvName;
use hark_core::protocol::{FrameKind, ListenFrom, MessageOutcome};
use hark_tools::client::Client;

use super::WAIT;
use super::heard::Heard;
use super::names::conv;
use super::process::RelayProcess;
use super::talk::{OPUS_HEAD, expect_pong, payloads, talk_message};

/// Frames in each bystander message: under the smallest burst a test configures (10), so a
/// rate-limit test does not limit the bystanders.
const BYSTANDER_FRAMES: u32 = 8;

/// A listener and a talker, connected before the bad input arrives.
#[derive(Debug)]
pub struct Bystanders {
    listener: Client,
    heard: Heard,
    talker: Client,
    conversation: ConvName,
    messages: u32,
}

impl Bystanders {
    /// Connects both and waits until the listener is live on `bystanders`.
    pub fn join(relay: &RelayProcess) -> Self {
        let conversation = conv("bystanders");
        let mut listener = relay.session("bystander-listener");
        let mut heard = Heard::new();
        listener
            .listen(1, &conversation, ListenFrom::Live)
            .expect("listen sent");
        heard.read_until(&mut listener, WAIT, "bystander listens", |h| h.is_live(1));
        let talker = relay.session("bystander-talker");
        Self {
            listener,
            heard,
            talker,
            conversation,
            messages: 0,
        }
    }

    /// Asserts both sessions still work exactly: a new message is heard whole, live, once,
    /// and both connections answer a ping with nothing unexpected in between.
    pub fn check(&mut self) {
        self.messages += 1;
        let seed = 1000 + u64::from(self.messages);
        let sent = payloads(seed, BYSTANDER_FRAMES);
        let msg_id = talk_message(&mut self.talker, self.messages, &self.conversation, &sent);
        self.heard
            .read_until(&mut self.listener, WAIT, "bystander hears", |h| {
                h.has_ended(1, msg_id)
            });
        let message = self.heard.message(1, msg_id);
        assert_eq!(message.payloads(), sent, "bystander payloads");
        assert_eq!(
            message.end,
            Some((BYSTANDER_FRAMES, MessageOutcome::Complete))
        );
        assert_eq!(message.count_of(FrameKind::Live), sent.len());
        assert_eq!(message.codec.as_ref(), OPUS_HEAD);
        assert_eq!(message.sender, "bystander-talker");
        assert!(self.heard.others.is_empty(), "{:?}", self.heard.others);
        expect_pong(&mut self.listener, seed);
        expect_pong(&mut self.talker, seed);
    }
}
