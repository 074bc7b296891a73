//! The ctl protocol: framing, decoding errors, the stable JSON shapes.

use super::*;

#[test]
fn requests_round_trip() {
    let reqs = [
        Request::Ping,
        Request::Status {
            jail: Some("sshd".into()),
        },
        Request::Ban {
            jail: "sshd".into(),
            ip: "192.0.2.1".into(),
            bantime: Some("2".into()),
        },
        Request::Unban {
            ip: None,
            jail: None,
            all: true,
        },
    ];
    for r in reqs {
        let line = serde_json::to_vec(&RequestFrame {
            v: PROTOCOL_VERSION,
            request: r.clone(),
        })
        .expect("json");
        assert_eq!(decode_request(&line), Ok(r));
    }
}

#[test]
fn garbage_and_wrong_versions_get_usage_errors() {
    for line in [
        &b"\xff\xfe"[..],
        b"{}",
        b"[1,2]",
        br#"{"v":1}"#,
        br#"{"v":1,"request":{"cmd":"explode"}}"#,
        br#"{"v":1,"request":{"cmd":"ban","jail":"sshd"}}"#,
    ] {
        assert!(
            matches!(
                decode_request(line),
                Err(Response::Error { usage: true, .. })
            ),
            "{line:?}"
        );
    }
    match decode_request(br#"{"v":99,"request":{"cmd":"ping"}}"#) {
        Err(Response::Error { message, .. }) => assert!(message.contains("protocol")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ban_view_has_the_stable_json_fields() {
    let view = BanView {
        ip: "192.0.2.1".into(),
        jail: "sshd".into(),
        banned_at: chrono::DateTime::from_timestamp(0, 0).expect("time"),
        expires_at: None,
        count: 1,
        origin: None,
        matches: vec!["Failed password for root from 192.0.2.1".into()],
    };
    let v: serde_json::Value = serde_json::to_value(&view).expect("json");
    assert_eq!(v["matches"][0], "Failed password for root from 192.0.2.1");
    assert_eq!(v["ip"], "192.0.2.1");
    assert_eq!(v["banned_at"], "1970-01-01T00:00:00Z");
    assert!(v["expires_at"].is_null());
    assert_eq!(v["count"], 1);
    assert!(v["origin"].is_null(), "this host's own ban: origin null");
    let fleet = BanView {
        origin: Some("web-2".into()),
        ..view
    };
    let v: serde_json::Value = serde_json::to_value(&fleet).expect("json");
    assert_eq!(v["origin"], "web-2");
}

mod fuzz {
    use super::super::*;
    use proptest::prelude::*;

    /// JSON that looks like a request but may be wrong anywhere: the version,
    /// the command, the fields and their types.
    fn requestish() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ -~]{0,12}".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(2, 8, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(serde_json::Value::from)
        });
        let cmd = prop_oneof![
            Just("ping"),
            Just("version"),
            Just("status"),
            Just("banned"),
            Just("ban"),
            Just("unban"),
            Just("stats"),
            Just("reload"),
            Just("log-level"),
            Just("flush-logs"),
            Just("explode"),
            Just(""),
        ];
        let field = prop_oneof![
            Just("jail"),
            Just("ip"),
            Just("bantime"),
            Just("all"),
            Just("level"),
            Just("cmd"),
            Just("extra"),
        ];
        let version = prop_oneof![
            Just(serde_json::json!(1)),
            Just(serde_json::json!(2)),
            Just(serde_json::json!("1")),
            Just(serde_json::Value::Null),
        ];
        (version, cmd, prop::collection::vec((field, value), 0..4)).prop_map(|(v, cmd, fields)| {
            let mut request = serde_json::Map::new();
            request.insert("cmd".into(), cmd.into());
            for (k, val) in fields {
                request.insert(k.into(), val);
            }
            serde_json::json!({ "v": v, "request": request })
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_are_refused_as_usage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(r) = decode_request(&bytes) {
                let usage = matches!(r, Response::Error { usage: true, .. });
                prop_assert!(usage, "{:?}", r);
            }
        }

        #[test]
        fn wrong_requests_are_refused_or_decode_to_what_they_say(value in requestish()) {
            let line = serde_json::to_vec(&value).expect("json");
            match decode_request(&line) {
                Ok(request) => {
                    // Whatever was accepted is exactly a valid request.
                    let again = serde_json::to_vec(&RequestFrame { v: PROTOCOL_VERSION, request: request.clone() }).expect("json");
                    prop_assert_eq!(decode_request(&again), Ok(request));
                    prop_assert_eq!(&value["v"], &serde_json::json!(PROTOCOL_VERSION));
                }
                Err(r) => {
                    let usage = matches!(r, Response::Error { usage: true, .. });
                    prop_assert!(usage, "{:?}", r);
                }
            }
        }
    }
}

#[test]
fn a_version_of_the_wrong_type_is_named_as_such() {
    // Regression: `"v":-1` and `"v":"1"` were answered "no protocol version `v`".
    for (v, shown) in [("-1", "-1"), ("\"1\"", "\"1\""), ("1.5", "1.5")] {
        let line = format!("{{\"v\":{v},\"request\":{{\"cmd\":\"ping\"}}}}");
        match decode_request(line.as_bytes()) {
            Err(Response::Error {
                usage: true,
                message,
            }) => {
                assert!(message.contains("must be a whole number"), "{message}");
                assert!(message.contains(shown), "{message}");
            }
            other => panic!("{v}: {other:?}"),
        }
    }
    match decode_request(br#"{"request":{"cmd":"ping"}}"#) {
        Err(Response::Error { message, .. }) => assert!(message.contains("no protocol version")),
        other => panic!("{other:?}"),
    }
}
