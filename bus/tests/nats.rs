//! The JetStream backend against a real nats-server.

use bus::testing::NatsServer;
use bus::{EventBus, NatsBus, NatsOptions, Outgoing};
use bytes::Bytes;

#[tokio::test]
async fn publishes_into_created_streams_and_dedupes_by_id() {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsOptions::new(server.url()))
        .await
        .unwrap();
    let payload = Bytes::from_static(b"envelope");
    let events = [
        Outgoing {
            id: "e1",
            subject: "live.danmaku.r1",
            payload: &payload,
        },
        Outgoing {
            id: "e2",
            subject: "live.room.r1",
            payload: &payload,
        },
        Outgoing {
            id: "e1",
            subject: "live.danmaku.r1",
            payload: &payload,
        },
    ];
    let results = bus.publish_batch(&events).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut danmaku = js.get_stream("LIVE_DANMAKU").await.unwrap();
    assert_eq!(
        danmaku.info().await.unwrap().state.messages,
        1,
        "duplicate id stored once"
    );
    let mut rooms = js.get_stream("LIVE_ROOMS").await.unwrap();
    assert_eq!(rooms.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn reports_unavailable_while_the_server_is_down_then_recovers() {
    let mut server = NatsServer::start();
    let bus = NatsBus::connect(NatsOptions {
        ack_timeout: std::time::Duration::from_millis(500),
        ..NatsOptions::new(server.url())
    })
    .await
    .unwrap();
    let payload = Bytes::from_static(b"x");
    let event = [Outgoing {
        id: "a",
        subject: "live.room.r",
        payload: &payload,
    }];
    assert!(bus.publish_batch(&event).await[0].is_ok());
    server.stop();
    let down = bus
        .publish_batch(&[Outgoing {
            id: "b",
            ..event[0]
        }])
        .await;
    assert!(
        matches!(down[0], Err(bus::BusError::Unavailable(_))),
        "{down:?}"
    );
    server.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if bus
            .publish_batch(&[Outgoing {
                id: "b",
                ..event[0]
            }])
            .await[0]
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "publishing resumes after nats-server restarts");
}
