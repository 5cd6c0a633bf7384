//! The handover property test: a session talking through a model relay whose owner is lost
//! at random moments, whose new owner adopts the message from a random frame, which refuses
//! resumes for a while and whose connection breaks, writes exactly what the relay asks for.

use super::*;

/// The owner of the message: the frames it received, in order.
struct Owner {
    frames: Vec<Bytes>,
}

/// A relay as the talker sees it: one talk stream (handle 1), its message's current owner,
/// and the handover the test staged.
#[derive(Default)]
struct HandoverRelay {
    decoder: Decoder,
    owner: Option<Owner>,
    /// Handle 1 is open at the relay on this connection (a `talk_start` was accepted).
    open: bool,
    /// Resumes still to refuse with a handover code (the map has not moved yet).
    refusals: u32,
    /// The next accepted resume goes to a new owner holding this many frames of the message.
    adopt_from: Option<u32>,
    ended: Option<u32>,
}

impl HandoverRelay {
    /// Takes the client's bytes and answers. Every check here is the relay's view: a frame
    /// is only ever the next one the owner asked for, on a handle that is open.
    fn take(&mut self, out: &mut BytesMut, sent: &[Bytes]) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(request) = self.decoder.decode_request(out).expect("valid requests") {
            match request {
                Request::Hello { .. } => events.push(hello_accepted(1)),
                Request::Ping { nonce } => events.push(Event::Pong { nonce }),
                Request::TalkStart {
                    stream: 1,
                    resume: None,
                    ..
                } => {
                    assert!(self.owner.is_none(), "one message, never a second");
                    self.owner = Some(Owner { frames: Vec::new() });
                    self.open = true;
                    events.push(Event::TalkStarted {
                        stream: 1,
                        msg_id: msg(1),
                        next_seq: 0,
                    });
                }
                Request::TalkStart {
                    stream: 1,
                    resume: Some(id),
                    ..
                } => {
                    assert_eq!(id, msg(1));
                    assert!(!self.open, "a resume only for an idle handle");
                    if self.refusals > 0 {
                        self.refusals -= 1;
                        events.push(Event::Error {
                            code: HANDOVER_CODES[self.refusals as usize % HANDOVER_CODES.len()],
                            about: ErrorSubject::TalkStream(1),
                            text: String::new(),
                        });
                        continue;
                    }
                    if let Some(from) = self.adopt_from.take() {
                        self.owner = Some(Owner {
                            frames: sent[..from as usize].to_vec(),
                        });
                    }
                    let owner = self.owner.as_ref().expect("a resume follows a start");
                    self.open = true;
                    events.push(Event::TalkStarted {
                        stream: 1,
                        msg_id: msg(1),
                        next_seq: owner.frames.len() as u32,
                    });
                }
                Request::TalkFrame {
                    stream: 1,
                    seq,
                    payload,
                } => {
                    assert!(self.open, "frame {seq} on an idle handle: not asked for");
                    let owner = self.owner.as_mut().expect("open means owned");
                    assert_eq!(
                        seq as usize,
                        owner.frames.len(),
                        "exactly the next frame the owner asked for"
                    );
                    assert_eq!(payload, sent[seq as usize]);
                    owner.frames.push(payload);
                }
                Request::TalkEnd {
                    stream: 1,
                    frame_count,
                } => {
                    assert!(self.open, "an end on an idle handle: not asked for");
                    let owner = self.owner.as_ref().expect("open means owned");
                    assert_eq!(frame_count as usize, owner.frames.len(), "no frame missing");
                    self.ended = Some(frame_count);
                    self.open = false;
                    events.push(Event::TalkEnded {
                        stream: 1,
                        frame_count,
                    });
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        events
    }
}

#[derive(Debug, Clone)]
enum Step {
    Frame(u8),
    /// The owner stores what it has and acks it.
    Commit,
    /// The owner is lost: the new one adopts the message from `adopt % (frames_sent + 1)`,
    /// after `refusals` refused resumes.
    LoseOwner {
        adopt: u32,
        refusals: u32,
    },
    /// The connection breaks; bytes in flight are lost.
    Break,
    /// Time passes (µs) and the session is polled.
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<u8>().prop_map(Step::Frame),
        2 => Just(Step::Commit),
        2 => (any::<u32>(), 0u32..10).prop_map(|(adopt, refusals)| Step::LoseOwner { adopt, refusals }),
        1 => Just(Step::Break),
        4 => (0u64..400_000).prop_map(Step::Tick),
    ]
}

/// The session and the relay, with the clock, the frames talked and the checks made on the
/// session's side (backoff bounds, give-up time).
struct Run {
    session: ClientSession,
    relay: HandoverRelay,
    out: BytesMut,
    now_us: u64,
    sent: Vec<Bytes>,
    given_up: bool,
}

const PATIENCE_US: u64 = 2_000_000;

impl Run {
    fn new() -> Self {
        let mut session = ClientSession::new(Bytes::new(), "prop");
        session.set_handover_patience_us(PATIENCE_US);
        session.set_jitter_seed(5);
        let mut run = Self {
            session,
            relay: HandoverRelay::default(),
            out: BytesMut::new(),
            now_us: 1_000_000,
            sent: Vec::new(),
            given_up: false,
        };
        run.session.connect(run.now_us, &mut run.out).unwrap();
        run.session
            .talk_start(1, conv(), Bytes::new(), run.now_us, &mut run.out)
            .unwrap();
        run.pump();
        run
    }

    /// The relay reads everything written and its answers are applied, until quiet.
    fn pump(&mut self) {
        // Bounded: each round answers what the previous one wrote; resends are finite.
        for _ in 0..16 {
            let events = self.relay.take(&mut self.out, &self.sent);
            if events.is_empty() {
                return;
            }
            for event in events {
                self.apply(&event);
            }
        }
        panic!("the session and the relay never went quiet");
    }

    fn apply(&mut self, event: &Event) {
        self.session
            .apply(event, self.now_us, &mut self.out)
            .unwrap();
        if matches!(event, Event::Error { .. }) {
            self.check_backoff();
        }
    }

    /// After a handover error the next resume is due within the backoff's bounds (or at
    /// the give-up time, whichever comes first).
    fn check_backoff(&self) {
        let Some(talk) = self.session.talks.get(&1) else {
            return;
        };
        let handover = talk.handover.as_ref().expect("a handover error is kept");
        let due_us = handover.due_us().expect("a resume is scheduled");
        let since_us = talk.status.handover_since_us.expect("under way");
        let give_up_us = since_us + PATIENCE_US;
        assert!(due_us <= self.now_us + HANDOVER_BACKOFF_MAX_US);
        assert!(due_us >= (self.now_us + HANDOVER_BACKOFF_MIN_US).min(give_up_us));
    }

    fn tick(&mut self, elapsed_us: u64) {
        self.now_us += elapsed_us;
        let due_us = self
            .session
            .talks
            .get(&1)
            .and_then(|talk| talk.handover.as_ref())
            .and_then(|handover| handover.due_us());
        let since_us = self
            .session
            .talk(1)
            .and_then(|status| status.handover_since_us);
        match self.session.poll(self.now_us, &mut self.out) {
            Ok(_) => {
                let resumed = self
                    .session
                    .talks
                    .get(&1)
                    .and_then(|talk| talk.handover.as_ref())
                    .is_some_and(|handover| handover.due_us().is_none());
                if let (Some(due_us), true) = (due_us, resumed) {
                    assert!(self.now_us >= due_us, "a resume before its due time");
                }
            }
            Err(ClientSessionError::HandoverFailed { stream: 1, msg_id }) => {
                assert_eq!(msg_id, msg(1));
                let since_us = since_us.expect("a handover was under way");
                assert!(self.now_us >= since_us + PATIENCE_US, "gave up too early");
                assert!(self.session.talk(1).is_none());
                self.given_up = true;
            }
            Err(error) => panic!("poll failed: {error}"),
        }
        self.pump();
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Frame(byte) => {
                let Some(status) = self.session.talk(1) else {
                    return;
                };
                if status.phase != TalkPhase::Open {
                    return;
                }
                let payload = Bytes::from(vec![byte, self.sent.len() as u8]);
                let seq = self
                    .session
                    .talk_frame(1, payload.clone(), self.now_us, &mut self.out)
                    .unwrap();
                assert_eq!(seq as usize, self.sent.len());
                self.sent.push(payload);
            }
            Step::Commit => {
                self.pump();
                if let (true, Some(owner)) = (self.relay.open, &self.relay.owner) {
                    let stored = Event::Stored {
                        stream: 1,
                        frames_stored: owner.frames.len() as u32,
                    };
                    self.apply(&stored);
                }
            }
            Step::LoseOwner { adopt, refusals } => {
                // What was written before the loss reached the old owner.
                self.pump();
                if !self.relay.open {
                    return;
                }
                self.relay.open = false;
                self.relay.adopt_from = Some(adopt % (self.sent.len() as u32 + 1));
                self.relay.refusals = refusals;
                let code = HANDOVER_CODES[adopt as usize % HANDOVER_CODES.len()];
                self.apply(&Event::Error {
                    code,
                    about: ErrorSubject::TalkStream(1),
                    text: String::new(),
                });
            }
            Step::Break => {
                self.out.clear();
                self.relay.decoder = Decoder::new();
                self.relay.open = false;
                // The relay reads the new connection's hello and resume later (a later step):
                // a handover's timer may come due meanwhile.
                self.session.connect(self.now_us, &mut self.out).unwrap();
            }
            Step::Tick(elapsed_us) => self.tick(elapsed_us),
        }
    }
}

proptest! {
    /// Whatever the interleaving of frames, stored acks, lost owners adopting from any
    /// frame, refused resumes and broken connections, the owner that ends the message has
    /// every frame exactly once and in order, and the relay never gets a frame it did not ask
    /// for (checked in `HandoverRelay::take`); or the session gave up after its patience.
    #[test]
    fn a_handed_over_message_ends_with_every_frame_in_order(
        steps in prop::collection::vec(step(), 0..120),
    ) {
        let mut run = Run::new();
        for step in steps {
            run.run(step);
            if run.given_up {
                return Ok(());
            }
        }
        if run.session.talk(1).is_some_and(|status| status.phase == TalkPhase::Open) {
            run.session.talk_end(1, run.now_us, &mut run.out).unwrap();
        }
        run.pump();
        // Bounded: the relay refuses at most 9 resumes in a row; the patience ends the rest.
        for _ in 0..1000 {
            if run.session.talk(1).is_none() {
                break;
            }
            let next_us = run.session.next_poll_us().expect("the session is open");
            run.tick(next_us.saturating_sub(run.now_us));
        }
        prop_assert!(run.session.talk(1).is_none(), "the stream ended or was given up");
        if !run.given_up {
            let owner = run.relay.owner.as_ref().expect("the message was started");
            prop_assert_eq!(&owner.frames, &run.sent);
            prop_assert_eq!(run.relay.ended, Some(run.sent.len() as u32));
        }
    }
}
