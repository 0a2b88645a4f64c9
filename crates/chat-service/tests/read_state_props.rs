//! Property tests of the read-state invariants: whatever users send, delete and mark
//! read, the unread count equals a simple model's, and read markers never move back.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns assert by unwrapping too

mod support;

use chat_domain::{MessageId, Seq};
use proptest::prelude::*;
use support::{app, uid};

#[derive(Debug, Clone)]
enum Step {
    Send(i64),
    Delete(usize),
    MarkRead(i64, Option<usize>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..=3).prop_map(Step::Send),
        1 => (0usize..40).prop_map(Step::Delete),
        2 => ((1i64..=3), proptest::option::of(0usize..40)).prop_map(|(u, m)| Step::MarkRead(u, m)),
    ]
}

/// What the model remembers of a message.
struct Sent {
    id: MessageId,
    seq: Seq,
    sender: i64,
    deleted: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn unread_matches_the_model_and_markers_only_move_forward(steps in proptest::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = app().await;
            let id = app.group(1, &[2, 3]).await;
            let mut sent: Vec<Sent> = Vec::new();
            let mut markers = [Seq::ZERO; 4];
            for step in steps {
                match step {
                    Step::Send(user) => {
                        let view = app.send(user, id, "hello").await;
                        sent.push(Sent { id: view.message.id, seq: view.message.seq, sender: user, deleted: false });
                    }
                    Step::Delete(index) => {
                        if let Some(target) = sent.get_mut(index) {
                            if !target.deleted {
                                app.service.delete_message(uid(target.sender), target.id).await.unwrap();
                                target.deleted = true;
                            }
                        }
                    }
                    Step::MarkRead(user, index) => {
                        let up_to = index.and_then(|i| sent.get(i)).map(|m| m.id);
                        app.service.mark_read(uid(user), id, up_to).await.unwrap();
                    }
                }
                for user in 1..=3i64 {
                    let view = app.view(user, id).await;
                    let marker = view.membership.last_read_seq;
                    let slot = usize::try_from(user).unwrap();
                    assert!(marker >= markers[slot], "marker moved back");
                    markers[slot] = marker;
                    let expected = sent
                        .iter()
                        .filter(|m| m.sender != user && !m.deleted && m.seq > marker)
                        .count() as u64;
                    assert_eq!(view.unread_count, expected);
                    assert!(view.unread_count <= sent.len() as u64);
                }
            }
        });
    }
}
