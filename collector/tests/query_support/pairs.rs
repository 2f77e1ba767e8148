//! Deterministic synthetic pairs for the query tests: varied services, directions, protocols,
//! statuses and durations, with UUIDv7 ids made from their start time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tapwire_proto::Timestamp;
use tapwire_proto::v1::{Header, Message, Pair};

/// A small xorshift generator: reproducible data without a `rand` dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A protobuf timestamp.
pub fn ts(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Back from a protobuf timestamp.
pub fn time_of(t: &Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
}

/// Microseconds since the epoch (the database's resolution).
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// A UUIDv7 for `time`, unique through `rng`.
pub fn uuid_v7(time: SystemTime, rng: &mut Rng) -> String {
    let ms = time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..14].copy_from_slice(&rng.next().to_be_bytes());
    b[14..].copy_from_slice(&rng.next().to_be_bytes()[..2]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    uuid::Uuid::from_bytes(b).to_string()
}

/// Services of the synthetic cluster.
pub const SERVICES: [&str; 4] = ["shop", "cart", "payments", "search"];
/// Namespaces, by service index.
pub const NAMESPACES: [&str; 4] = ["web", "web", "billing", "web"];
/// HTTP endpoints (template, concrete path maker).
pub const HTTP_PATHS: [&str; 4] = ["/users/{id}", "/users/{id}/orders", "/health", "/search"];

/// The concrete path for a template (numbers for `{id}`) plus a query string sometimes.
fn concrete(template: &str, rng: &mut Rng) -> String {
    let mut path = template.replace("{id}", &(1 + rng.below(99_999)).to_string());
    if template == "/search" {
        path.push_str(&format!("?q=term{}", rng.below(10)));
    }
    path
}

/// One synthetic pair at `time`.
pub fn pair_at(time: SystemTime, rng: &mut Rng) -> Pair {
    let s = rng.below(SERVICES.len() as u64) as usize;
    let grpc = rng.below(5) == 0;
    let is_inbound = rng.below(2) == 0;
    let duration_ns = match rng.below(10) {
        0 => 1 + rng.below(1000),
        1..=6 => 100_000 + rng.below(5_000_000),
        7 | 8 => 5_000_000 + rng.below(200_000_000),
        _ => 1_000_000_000 + rng.below(5_000_000_000),
    };
    let (protocol, method, path, status, grpc_status) = if grpc {
        let status = *rng.pick(&[0u32, 0, 0, 5, 14]);
        (
            "grpc",
            "POST",
            (*rng.pick(&["/shop.Cart/Add", "/shop.Cart/List"])).to_owned(),
            200,
            Some(status),
        )
    } else {
        let status = *rng.pick(&[200u32, 200, 200, 201, 204, 301, 404, 429, 500, 503, 0]);
        let method = *rng.pick(&["GET", "GET", "POST", "DELETE"]);
        let template = rng.pick(&HTTP_PATHS);
        (
            *rng.pick(&["http1", "http2"]),
            method,
            concrete(template, rng),
            status,
            None,
        )
    };
    let remote = rng.below(SERVICES.len() as u64 + 2) as usize;
    let (remote_service, authority) = match remote {
        r if r < SERVICES.len() && !is_inbound => {
            (SERVICES[r].to_owned(), format!("{}.svc", SERVICES[r]))
        }
        r if r == SERVICES.len() => (String::new(), "api.example.com".to_owned()),
        _ => (String::new(), String::new()),
    };
    let body = format!("{{\"n\":{}}}", rng.below(1000));
    let end = time + Duration::from_nanos(duration_ns);
    Pair {
        id: uuid_v7(time, rng),
        start_time: Some(ts(time)),
        end_time: Some(ts(end)),
        request_end_time: Some(ts(time + Duration::from_nanos(duration_ns / 4))),
        response_start_time: Some(ts(time + Duration::from_nanos(duration_ns / 2))),
        duration_ns,
        is_inbound,
        protocol: protocol.into(),
        request: Some(Message {
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.clone().into_bytes().into(),
            body_size: body.len() as u64,
            ..Default::default()
        }),
        response: (status != 0).then(|| Message {
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.clone().into_bytes().into(),
            body_size: body.len() as u64,
            ..Default::default()
        }),
        method: method.into(),
        scheme: "http".into(),
        authority,
        path,
        status: if status == 0 { 0 } else { status },
        grpc_status,
        local_addr: "10.0.0.1:8080".into(),
        remote_addr: format!("10.0.1.{}:{}", remote, 40000 + rng.below(1000)),
        pid: 100 + s as u32,
        comm: SERVICES[s].into(),
        node: (*rng.pick(&["node-a", "node-b"])).into(),
        namespace: NAMESPACES[s].into(),
        pod: format!("{}-{}", SERVICES[s], rng.below(3)),
        service: SERVICES[s].into(),
        remote_service,
        complete: status != 0,
        ..Default::default()
    }
}

/// `count` pairs spread evenly over `[start, start + span)`, several sharing a microsecond so
/// that the id breaks ties.
pub fn pairs_between(start: SystemTime, span: Duration, count: usize, seed: u64) -> Vec<Pair> {
    let mut rng = Rng::new(seed);
    let step = span.as_micros() as u64 / count.max(1) as u64;
    (0..count)
        .map(|i| {
            // Every third pair shares the previous one's microsecond.
            let slot = (i - i % 3 / 2) as u64;
            pair_at(start + Duration::from_micros(slot * step), &mut rng)
        })
        .collect()
}
