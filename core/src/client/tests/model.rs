//! The property test: a session resuming through a model relay that crashes and forgets
//! what it did not store delivers every frame exactly once.

use super::*;

/// A relay that stores what it receives, loses the unstored tail when the connection
/// breaks, and acks some stored prefix.
#[derive(Default)]
struct ModelRelay {
    decoder: Decoder,
    /// msg counter → frames stored durably.
    stored: BTreeMap<u32, Vec<Bytes>>,
    /// msg counter → frames received but not yet durable.
    pending: BTreeMap<u32, Vec<Bytes>>,
    /// client stream → msg counter on the current connection.
    streams: BTreeMap<u32, u32>,
    ended: BTreeMap<u32, u32>,
    next_msg: u32,
}

impl ModelRelay {
    /// Takes the client's bytes and answers with events.
    fn take(&mut self, out: &mut BytesMut) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(request) = self.decoder.decode_request(out).expect("valid requests") {
            match request {
                Request::Hello { .. } => events.push(hello_accepted(1)),
                Request::TalkStart { stream, resume, .. } => {
                    let counter = match resume {
                        Some(id) => {
                            let counter = id.counter();
                            // Unstored frames were lost with the crash.
                            self.pending.insert(counter, Vec::new());
                            counter
                        }
                        None => {
                            self.next_msg += 1;
                            self.stored.insert(self.next_msg, Vec::new());
                            self.pending.insert(self.next_msg, Vec::new());
                            self.next_msg
                        }
                    };
                    self.streams.insert(stream, counter);
                    let next_seq = self.stored[&counter].len() as u32;
                    events.push(Event::TalkStarted {
                        stream,
                        msg_id: msg(counter),
                        next_seq,
                    });
                }
                Request::TalkFrame {
                    stream,
                    seq,
                    payload,
                } => {
                    let counter = self.streams[&stream];
                    let have = self.stored[&counter].len() + self.pending[&counter].len();
                    if (seq as usize) < have {
                        continue;
                    }
                    assert_eq!(seq as usize, have, "the client never leaves a gap");
                    self.pending.get_mut(&counter).unwrap().push(payload);
                }
                Request::TalkEnd {
                    stream,
                    frame_count,
                } => {
                    let counter = self.streams[&stream];
                    self.commit(stream, &mut events);
                    self.ended.insert(counter, frame_count);
                    events.push(Event::TalkEnded {
                        stream,
                        frame_count,
                    });
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        events
    }

    /// Makes everything pending durable and acks it.
    fn commit(&mut self, stream: u32, events: &mut Vec<Event>) {
        let Some(&counter) = self.streams.get(&stream) else {
            return;
        };
        let pending = std::mem::take(self.pending.get_mut(&counter).unwrap());
        let stored = self.stored.get_mut(&counter).unwrap();
        stored.extend(pending);
        events.push(Event::Stored {
            stream,
            frames_stored: stored.len() as u32,
        });
    }

    fn crash(&mut self) {
        self.decoder = Decoder::new();
        self.streams.clear();
        for pending in self.pending.values_mut() {
            pending.clear();
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Frame(u8),
    Commit,
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<u8>().prop_map(Step::Frame),
        2 => Just(Step::Commit),
        1 => Just(Step::Crash),
    ]
}

proptest! {
    /// Whatever the interleaving of frames, commits and crashes, the stored message ends as
    /// exactly the frames the talker sent, in order, under one message id.
    #[test]
    fn resumes_deliver_every_frame_exactly_once(steps in prop::collection::vec(step(), 0..80)) {
        let mut relay = ModelRelay::default();
        let mut session = ClientSession::new(Bytes::new(), "prop");
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        session.connect(0, &mut out).unwrap();
        session.talk_start(1, conv(), Bytes::new(), 0, &mut out).unwrap();
        let pump = |session: &mut ClientSession, relay: &mut ModelRelay, out: &mut BytesMut| {
            // Bounded: each round either delivers events or stops.
            for _ in 0..16 {
                let events = relay.take(out);
                if events.is_empty() {
                    break;
                }
                for event in events {
                    session.apply(&event, 0, out).unwrap();
                }
            }
        };
        for step in steps {
            match step {
                Step::Frame(byte) => {
                    let payload = Bytes::from(vec![byte, sent.len() as u8]);
                    session.talk_frame(1, payload.clone(), 0, &mut out).unwrap();
                    sent.push(payload);
                }
                Step::Commit => {
                    pump(&mut session, &mut relay, &mut out);
                    let mut events = Vec::new();
                    relay.commit(1, &mut events);
                    for event in events {
                        session.apply(&event, 0, &mut out).unwrap();
                    }
                }
                Step::Crash => {
                    // What was written but not read by the relay is lost with the connection.
                    pump(&mut session, &mut relay, &mut out);
                    relay.crash();
                    out.clear();
                    session.connect(0, &mut out).unwrap();
                }
            }
        }
        session.talk_end(1, 0, &mut out).unwrap();
        pump(&mut session, &mut relay, &mut out);
        prop_assert!(session.talk(1).is_none(), "talk_ended arrived");
        prop_assert_eq!(relay.stored.len(), 1, "one message, resumed, never a second");
        prop_assert_eq!(&relay.stored[&1], &sent);
        prop_assert_eq!(relay.ended[&1], sent.len() as u32);
    }
}
