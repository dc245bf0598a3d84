//! WebSocket after the upgrade: frames pass through unchanged — same fragmentation,
//! same masks, pings answered by the peers themselves — while a copy of each message
//! is reassembled (and inflated for permessage-deflate) for the flow.
//!
//! Only frame headers are parsed (with tungstenite's parser); payloads stream through,
//! so a 1 GiB frame needs no more memory than a small one.
//!
//! The second half records a flow's WebSocket: after a 101 (or an RFC 8441 2xx) the
//! relay runs in a task of its own and each message lands in the flow.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use periscope_flow::{LogLevel, Timestamp, WebSocketMessage, WebSocketOpcode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::core::ProxyCore;
use crate::intercept::FlowGate;
use crate::recorder::FlowRecorder;
use crate::upgrade::PendingUpgrade;

/// Where reassembled messages go.
pub trait MessageSink: Send + Sync {
    fn message(&self, message: WebSocketMessage);
    /// A Close frame: its code and reason, and who sent it.
    fn close(&self, from_client: bool, code: Option<u16>, reason: Option<String>);
}

/// What the user decided about a data message held by the intercept filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageVerdict {
    /// Deliver it as it came (the same frames, byte for byte).
    Deliver,
    /// Deliver this content instead, in one uncompressed frame of the same type.
    Replace(bytes::Bytes),
    /// Never deliver it.
    Drop,
    /// End the WebSocket.
    Kill,
}

/// Holds data messages for the user, when the intercept filter matches the flow.
pub trait MessageGate: Send + Sync {
    /// Whether the message starting now is to be held (asked at its first frame).
    fn holds(&self) -> bool;
    /// Waits for the user's verdict on a complete held message.
    fn decide<'a>(
        &'a self,
        message: &'a WebSocketMessage,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MessageVerdict> + Send + 'a>>;
}

/// A message Periscope writes into one direction of a WebSocket.
#[derive(Clone, Debug)]
pub struct Injected {
    pub opcode: WebSocketOpcode,
    pub content: bytes::Bytes,
}

/// What the user can do to a relay while it runs (nothing, for a plain `dump`).
#[derive(Default)]
pub struct RelayControls {
    pub gate: Option<Arc<dyn MessageGate>>,
    pub to_client: Option<tokio::sync::mpsc::UnboundedReceiver<Injected>>,
    pub to_server: Option<tokio::sync::mpsc::UnboundedReceiver<Injected>>,
}

/// permessage-deflate as the server accepted it (RFC 7692).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deflate {
    pub enabled: bool,
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
}

impl Deflate {
    /// From the server's `Sec-WebSocket-Extensions` answer.
    pub fn from_extensions(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Deflate::default();
        };
        for extension in header.split(',') {
            let mut params = extension.split(';').map(str::trim);
            if params.next() != Some("permessage-deflate") {
                continue;
            }
            let mut deflate = Deflate {
                enabled: true,
                ..Deflate::default()
            };
            for param in params {
                match param.split('=').next().unwrap_or("").trim() {
                    "client_no_context_takeover" => deflate.client_no_context_takeover = true,
                    "server_no_context_takeover" => deflate.server_no_context_takeover = true,
                    _ => {}
                }
            }
            return deflate;
        }
        Deflate::default()
    }
}

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64), for the
/// HTTP/1.1 handshake Periscope makes on behalf of an HTTP/2 client, which sends none.
pub fn handshake_key() -> Result<String, openssl::error::ErrorStack> {
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    Ok(BASE64.encode(nonce))
}

/// The `Sec-WebSocket-Accept` a server must answer to `key` (RFC 6455 §4.2.2): the
/// proof that it understood the handshake rather than caching or ignoring it.
pub fn accept_key(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    BASE64.encode(openssl::sha::sha1(format!("{key}{GUID}").as_bytes()))
}

/// Relays both directions until both are closed. One task drives both streams (TLS
/// streams must not be split across tasks); `limit` bounds what is recorded.
pub async fn relay<C, S>(
    client: C,
    server: S,
    sink: Arc<dyn MessageSink>,
    deflate: Deflate,
    limit: usize,
    controls: RelayControls,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let budget = Arc::new(Mutex::new(limit));
    let mut upstream = Direction::new(true, deflate, Arc::clone(&sink), Arc::clone(&budget));
    let mut downstream = Direction::new(false, deflate, sink, budget);
    upstream.gate = controls.gate.clone();
    downstream.gate = controls.gate;
    upstream.injected = controls.to_server;
    downstream.injected = controls.to_client;
    upstream.hold_limit = limit;
    downstream.hold_limit = limit;
    let (up, down) = tokio::join!(
        upstream.pump(client_read, server_write),
        downstream.pump(server_read, client_write)
    );
    up.and(down)
}

/// The message being reassembled in one direction.
struct Assembly {
    opcode: WebSocketOpcode,
    compressed: bool,
    content: BytesMut,
    size: u64,
    truncated: bool,
    frames: u32,
    /// A Close frame's payload, kept apart from `content`: its code and reason must be
    /// recorded even when the body limit was used up earlier on the connection.
    close: Vec<u8>,
}

struct Direction {
    from_client: bool,
    deflate: Deflate,
    inflater: Option<Decompress>,
    sink: Arc<dyn MessageSink>,
    /// Bytes of content the flow may still keep, shared by both directions.
    budget: Arc<Mutex<usize>>,
    /// A data message, possibly fragmented.
    data: Option<Assembly>,
    /// A control frame (these may arrive between the fragments of a data message).
    control: Option<Assembly>,
    in_control: bool,
    /// Holds data messages for the user (intercept), when set.
    gate: Option<Arc<dyn MessageGate>>,
    /// The frames of the data message being held, as they came (header and masked
    /// payload): delivered byte for byte unless the user changes the message.
    held: Option<BytesMut>,
    /// A held message grown past this is let go unheld.
    hold_limit: usize,
    /// Messages Periscope writes into this direction, between messages.
    injected: Option<tokio::sync::mpsc::UnboundedReceiver<Injected>>,
}

const READ_CHUNK: usize = 64 * 1024;
/// RFC 6455 §5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The tail RFC 7692 strips from each compressed message.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Direction {
    fn new(
        from_client: bool,
        deflate: Deflate,
        sink: Arc<dyn MessageSink>,
        budget: Arc<Mutex<usize>>,
    ) -> Self {
        Direction {
            from_client,
            deflate,
            inflater: deflate.enabled.then(|| Decompress::new(false)),
            sink,
            budget,
            data: None,
            control: None,
            in_control: false,
            gate: None,
            held: None,
            hold_limit: usize::MAX,
            injected: None,
        }
    }

    async fn pump<R, W>(mut self, mut reader: R, mut writer: W) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        // The frame being relayed: its header, payload bytes still to come, and how
        // many came already (the mask offset).
        let mut frame: Option<(FrameHeader, u64, u64)> = None;
        loop {
            // Between messages, a message Periscope was asked to write may go first.
            let between_messages = frame.is_none() && self.data.is_none();
            let read = match self.injected.as_mut() {
                Some(injected) if between_messages => tokio::select! {
                    read = reader.read_buf(&mut buffer) => read?,
                    Some(message) = injected.recv() => {
                        self.inject(&mut writer, message).await?;
                        continue;
                    }
                },
                _ => reader.read_buf(&mut buffer).await?,
            };
            if read == 0 {
                writer.shutdown().await.ok();
                return Ok(());
            }
            loop {
                match &mut frame {
                    None => {
                        let mut cursor = Cursor::new(&buffer[..]);
                        let parsed = FrameHeader::parse(&mut cursor).map_err(|e| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                        })?;
                        let Some((header, length)) = parsed else {
                            break;
                        };
                        let header_length = cursor.position() as usize;
                        self.start_frame(&header);
                        self.forward(&mut writer, &buffer[..header_length]).await?;
                        buffer.advance(header_length);
                        frame = Some((header, length, 0));
                    }
                    Some((header, remaining, offset)) => {
                        let take = (*remaining).min(buffer.len() as u64) as usize;
                        if take > 0 {
                            self.forward(&mut writer, &buffer[..take]).await?;
                            let mut piece = buffer.split_to(take);
                            if let Some(mask) = header.mask {
                                unmask(&mut piece, mask, *offset);
                            }
                            self.payload(&piece);
                            *remaining -= take as u64;
                            *offset += take as u64;
                        }
                        if *remaining > 0 {
                            break;
                        }
                        let is_final = header.is_final;
                        frame = None;
                        if let Some(held) = self.end_frame(is_final) {
                            self.release(&mut writer, held).await?;
                        }
                    }
                }
            }
            writer.flush().await?;
            if buffer.capacity() < READ_CHUNK / 4 {
                buffer.reserve(READ_CHUNK);
            }
        }
    }

    /// Writes frame bytes on, or keeps them with the held message. A control frame
    /// (which may come between a held message's fragments) always goes on at once.
    async fn forward<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        match self.held.as_mut() {
            Some(held) if !self.in_control => {
                held.extend_from_slice(bytes);
                if held.len() > self.hold_limit {
                    // Too large to hold: it goes on as it comes, not intercepted.
                    let held = self.held.take().unwrap_or_default();
                    writer.write_all(&held).await?;
                }
                Ok(())
            }
            _ => writer.write_all(bytes).await,
        }
    }

    /// A complete held message: the user decides, then it goes on (as it came or as
    /// changed), or not.
    async fn release<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        held: Held,
    ) -> std::io::Result<()> {
        let Held {
            frames,
            mut message,
        } = held;
        let verdict = match &self.gate {
            Some(gate) => gate.decide(&message).await,
            None => MessageVerdict::Deliver,
        };
        match verdict {
            MessageVerdict::Deliver => writer.write_all(&frames).await?,
            MessageVerdict::Replace(content) => {
                writer
                    .write_all(&encode_frame(message.opcode, &content, self.from_client)?)
                    .await?;
                message.size = content.len() as u64;
                message.truncated = false;
                message.frames = 1;
                message.content = content;
                message.fate = periscope_flow::MessageFate::Edited;
            }
            MessageVerdict::Drop => message.fate = periscope_flow::MessageFate::Dropped,
            MessageVerdict::Kill => {
                return Err(std::io::Error::other("the flow was killed in Periscope"));
            }
        }
        self.sink.message(message);
        Ok(())
    }

    /// Writes a message Periscope was asked to send, in one frame.
    async fn inject<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        message: Injected,
    ) -> std::io::Result<()> {
        writer
            .write_all(&encode_frame(
                message.opcode,
                &message.content,
                self.from_client,
            )?)
            .await?;
        writer.flush().await?;
        self.sink.message(WebSocketMessage {
            from_client: self.from_client,
            opcode: message.opcode,
            size: message.content.len() as u64,
            content: message.content,
            truncated: false,
            frames: 1,
            at: Timestamp::now(),
            fate: periscope_flow::MessageFate::Injected,
        });
        Ok(())
    }

    fn start_frame(&mut self, header: &FrameHeader) {
        self.in_control = matches!(header.opcode, OpCode::Control(_));
        let opcode = match header.opcode {
            OpCode::Data(Data::Continue) => {
                if let Some(data) = self.data.as_mut() {
                    data.frames += 1;
                    return;
                }
                // A continuation with nothing to continue: keep it as binary.
                WebSocketOpcode::Binary
            }
            OpCode::Data(Data::Text) => WebSocketOpcode::Text,
            OpCode::Data(_) => WebSocketOpcode::Binary,
            OpCode::Control(Control::Close) => WebSocketOpcode::Close,
            OpCode::Control(Control::Ping) => WebSocketOpcode::Ping,
            OpCode::Control(_) => WebSocketOpcode::Pong,
        };
        let assembly = Assembly {
            opcode,
            compressed: header.rsv1 && self.deflate.enabled && !self.in_control,
            content: BytesMut::new(),
            size: 0,
            truncated: false,
            frames: 1,
            close: Vec::new(),
        };
        if self.in_control {
            self.control = Some(assembly);
        } else {
            if self.gate.as_ref().is_some_and(|gate| gate.holds()) {
                self.held = Some(BytesMut::new());
            }
            self.data = Some(assembly);
        }
    }

    fn payload(&mut self, piece: &[u8]) {
        let in_control = self.in_control;
        let Some(assembly) = (if in_control {
            self.control.as_mut()
        } else {
            self.data.as_mut()
        }) else {
            return;
        };
        if assembly.opcode == WebSocketOpcode::Close {
            let room = MAX_CONTROL_PAYLOAD.saturating_sub(assembly.close.len());
            assembly
                .close
                .extend_from_slice(&piece[..piece.len().min(room)]);
        }
        if assembly.compressed {
            if let Some(inflater) = self.inflater.as_mut() {
                inflate_into(inflater, piece, assembly, &self.budget);
            }
        } else {
            keep(assembly, piece, &self.budget);
        }
    }

    /// Ends a frame; a held data message that is now complete comes back for the
    /// user's verdict instead of being recorded.
    fn end_frame(&mut self, is_final: bool) -> Option<Held> {
        if self.in_control {
            if let Some(control) = self.control.take() {
                let message = self.finish(control);
                self.sink.message(message);
            }
            return None;
        }
        if !is_final {
            return None;
        }
        let mut data = self.data.take()?;
        if data.compressed {
            if let Some(inflater) = self.inflater.as_mut() {
                inflate_into(inflater, &DEFLATE_TAIL, &mut data, &self.budget);
                let reset = if self.from_client {
                    self.deflate.client_no_context_takeover
                } else {
                    self.deflate.server_no_context_takeover
                };
                if reset {
                    inflater.reset(false);
                }
            }
        }
        let message = self.finish(data);
        match self.held.take() {
            Some(frames) => Some(Held {
                frames: frames.freeze(),
                message,
            }),
            None => {
                self.sink.message(message);
                None
            }
        }
    }

    fn finish(&self, assembly: Assembly) -> WebSocketMessage {
        if assembly.opcode == WebSocketOpcode::Close {
            let (code, reason) = close_payload(&assembly.close);
            self.sink.close(self.from_client, code, reason);
        }
        WebSocketMessage {
            from_client: self.from_client,
            opcode: assembly.opcode,
            content: assembly.content.freeze(),
            size: assembly.size,
            truncated: assembly.truncated,
            frames: assembly.frames,
            at: Timestamp::now(),
            fate: periscope_flow::MessageFate::Relayed,
        }
    }
}

/// A complete data message held for the user: its frames as they came, and what it
/// says.
struct Held {
    frames: bytes::Bytes,
    message: WebSocketMessage,
}

/// One final, uncompressed frame (RSV1 clear: RFC 7692 lets any message go
/// uncompressed), masked with a fresh key when it goes to the server (RFC 6455 §5.3).
fn encode_frame(
    opcode: WebSocketOpcode,
    content: &[u8],
    to_server: bool,
) -> std::io::Result<Vec<u8>> {
    let code = match opcode {
        WebSocketOpcode::Text => OpCode::Data(Data::Text),
        WebSocketOpcode::Binary => OpCode::Data(Data::Binary),
        WebSocketOpcode::Close => OpCode::Control(Control::Close),
        WebSocketOpcode::Ping => OpCode::Control(Control::Ping),
        WebSocketOpcode::Pong => OpCode::Control(Control::Pong),
    };
    let mask = if to_server {
        let mut key = [0u8; 4];
        openssl::rand::rand_bytes(&mut key).map_err(std::io::Error::other)?;
        Some(key)
    } else {
        None
    };
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: code,
        mask,
    };
    let mut frame = Vec::with_capacity(content.len() + 14);
    header
        .format(content.len() as u64, &mut frame)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut payload = content.to_vec();
    if let Some(mask) = mask {
        unmask(&mut payload, mask, 0);
    }
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Keeps what the budget allows; counts everything.
fn keep(assembly: &mut Assembly, bytes: &[u8], budget: &Mutex<usize>) {
    assembly.size += bytes.len() as u64;
    let mut budget = budget.lock().unwrap_or_else(|p| p.into_inner());
    let take = bytes.len().min(*budget);
    assembly.content.extend_from_slice(&bytes[..take]);
    *budget -= take;
    if take < bytes.len() {
        assembly.truncated = true;
    }
}

/// Feeds compressed bytes through the direction's inflater. Every byte goes through
/// it (the window carries over between messages), only the budget is kept.
fn inflate_into(
    inflater: &mut Decompress,
    mut input: &[u8],
    assembly: &mut Assembly,
    budget: &Mutex<usize>,
) {
    let mut output = [0u8; 16 * 1024];
    loop {
        let before_in = inflater.total_in();
        let before_out = inflater.total_out();
        let status = inflater.decompress(input, &mut output, FlushDecompress::Sync);
        let consumed = (inflater.total_in() - before_in) as usize;
        let produced = (inflater.total_out() - before_out) as usize;
        keep(assembly, &output[..produced], budget);
        input = &input[consumed..];
        match status {
            Ok(Status::Ok) | Ok(Status::BufError)
                if input.is_empty() && produced < output.len() =>
            {
                return
            }
            Ok(Status::StreamEnd) => return,
            Ok(_) => {
                if consumed == 0 && produced == 0 {
                    return;
                }
            }
            Err(_) => {
                // Not valid deflate data: record the rest as it came.
                keep(assembly, input, budget);
                return;
            }
        }
    }
}

fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: u64) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[((offset + i as u64) % 4) as usize];
    }
}

fn close_payload(payload: &[u8]) -> (Option<u16>, Option<String>) {
    if payload.len() < 2 {
        return (None, None);
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
    (Some(code), (!reason.is_empty()).then_some(reason))
}

// ---------------------------------------------------------------------------------
// Recording a flow's WebSocket
// ---------------------------------------------------------------------------------

/// Marks the flow as a WebSocket, with the extensions the server accepted (its
/// messages are recorded as the relay sees them).
pub fn start_session(recorder: &FlowRecorder, headers: &http::HeaderMap) {
    let extensions = headers
        .get(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    recorder.update(|flow| {
        flow.websocket = Some(periscope_flow::WebSocketSession {
            extensions,
            ..Default::default()
        })
    });
}

/// After a 101 Switching Protocols, both sides talk the new protocol directly. A
/// WebSocket is relayed frame by frame and its messages recorded; anything else is
/// relayed as bytes.
pub fn relay_upgraded(
    core: &Arc<ProxyCore>,
    recorder: &Arc<FlowRecorder>,
    server: PendingUpgrade,
    client: PendingUpgrade,
) {
    let bus = core.bus.clone();
    let limit = core.config.body_limit;
    let core = Arc::clone(core);
    let recorder = Arc::clone(recorder);
    let flow_id = recorder.id();
    let websocket = recorder.read(|flow| flow.websocket.clone()).flatten();
    tokio::spawn(async move {
        let (mut server, mut client) = match tokio::try_join!(server, client) {
            Ok(both) => both,
            Err(error) => {
                bus.log(
                    LogLevel::Warn,
                    format!("flow {flow_id}: protocol upgrade failed: {error}"),
                );
                return;
            }
        };
        let Some(session) = websocket else {
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                tracing::debug!(%error, "upgraded connection ended");
            }
            return;
        };
        let deflate = Deflate::from_extensions(session.extensions.as_deref());
        let sink: Arc<dyn MessageSink> = Arc::new(FlowMessages {
            recorder: Arc::clone(&recorder),
            flow: flow_id,
        });
        let mut controls = RelayControls::default();
        if let (Some(live), Some(intercept)) = (&core.live, &core.intercept) {
            if let Some([to_client, to_server]) = live.open_injection(flow_id) {
                controls.to_client = Some(to_client);
                controls.to_server = Some(to_server);
            }
            controls.gate = Some(Arc::new(FlowGate {
                recorder: Arc::clone(&recorder),
                intercept: Arc::clone(intercept),
                live: Arc::clone(live),
                one_at_a_time: tokio::sync::Mutex::new(()),
            }));
        }
        let relayed = relay(client, server, sink, deflate, limit, controls);
        let outcome = match recorder.kill_switch() {
            None => relayed.await,
            Some(kill) => tokio::select! {
                outcome = relayed => outcome,
                () = kill.killed() => Err(std::io::Error::other(kill.reason())),
            },
        };
        if let Err(error) = outcome {
            match recorder.kill_switch().filter(|kill| kill.is_killed()) {
                Some(kill) => recorder.set_error(
                    periscope_flow::FlowErrorKind::Killed,
                    format!("the WebSocket was {}", kill.reason()),
                ),
                None => recorder.set_error(
                    periscope_flow::FlowErrorKind::UpstreamProtocol,
                    format!("the WebSocket connection failed: {error}"),
                ),
            }
        }
        recorder.publish_update();
    });
}

/// Most messages a flow keeps; a chatty socket open for hours must not grow a flow
/// without bound (the rest are counted).
const MAX_WEBSOCKET_MESSAGES: usize = 100_000;

/// Records a WebSocket's messages into its flow and tells the front ends.
struct FlowMessages {
    recorder: Arc<FlowRecorder>,
    flow: periscope_flow::FlowId,
}

impl MessageSink for FlowMessages {
    fn message(&self, message: periscope_flow::WebSocketMessage) {
        self.recorder.update(|flow| {
            if let Some(session) = flow.websocket.as_mut() {
                if session.messages.len() < MAX_WEBSOCKET_MESSAGES {
                    session.messages.push(message.clone());
                } else {
                    session.dropped_messages += 1;
                }
            }
        });
        self.recorder
            .publish(periscope_flow::FlowEvent::WebSocketMessage {
                flow: self.flow,
                message,
            });
    }

    fn close(&self, from_client: bool, code: Option<u16>, reason: Option<String>) {
        self.recorder.update(|flow| {
            if let Some(session) = flow.websocket.as_mut() {
                if session.closed_by_client.is_none() {
                    session.closed_by_client = Some(from_client);
                    session.close_code = code;
                    session.close_reason = reason;
                    session.closed_at = Some(Timestamp::now());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_keys_are_16_random_bytes() {
        let (Ok(first), Ok(second)) = (handshake_key(), handshake_key()) else {
            panic!("no random bytes");
        };
        assert_eq!(BASE64.decode(&first).map(|k| k.len()), Ok(16));
        assert_ne!(first, second);
    }

    /// Who closed, with which code and reason.
    type Close = (bool, Option<u16>, Option<String>);

    #[derive(Default)]
    struct Collected {
        messages: Mutex<Vec<WebSocketMessage>>,
        closes: Mutex<Vec<Close>>,
    }

    impl MessageSink for Collected {
        fn message(&self, message: WebSocketMessage) {
            self.messages.lock().unwrap().push(message);
        }
        fn close(&self, from_client: bool, code: Option<u16>, reason: Option<String>) {
            self.closes
                .lock()
                .unwrap()
                .push((from_client, code, reason));
        }
    }

    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(mask) = mask {
            out.extend_from_slice(&mask);
            unmask(&mut body, mask, 0);
        }
        out.extend(body);
        out
    }

    /// Sends `client_bytes` through a relay in pieces of `piece` bytes and returns what
    /// reached the server and what was recorded.
    async fn run(
        client_bytes: Vec<u8>,
        piece: usize,
        deflate: Deflate,
        limit: usize,
    ) -> (Vec<u8>, Arc<Collected>) {
        run_with(
            client_bytes,
            piece,
            deflate,
            limit,
            RelayControls::default(),
        )
        .await
    }

    async fn run_with(
        client_bytes: Vec<u8>,
        piece: usize,
        deflate: Deflate,
        limit: usize,
        controls: RelayControls,
    ) -> (Vec<u8>, Arc<Collected>) {
        let (client_app, client_proxy) = tokio::io::duplex(1 << 20);
        let (server_proxy, server_app) = tokio::io::duplex(1 << 20);
        let sink = Arc::new(Collected::default());
        let relay_task = tokio::spawn(relay(
            client_proxy,
            server_proxy,
            sink.clone(),
            deflate,
            limit,
            controls,
        ));
        let (mut server_read, mut server_write) = tokio::io::split(server_app);
        let writer = tokio::spawn(async move {
            let mut client_app = client_app;
            for chunk in client_bytes.chunks(piece) {
                client_app.write_all(chunk).await.unwrap();
            }
            client_app.shutdown().await.unwrap();
            client_app
        });
        let mut received = Vec::new();
        server_read.read_to_end(&mut received).await.unwrap();
        server_write.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        relay_task.await.unwrap().unwrap();
        (received, sink)
    }

    /// Holds every data message and decides by its text: "keep", "edit", "drop".
    struct ByContent;
    impl MessageGate for ByContent {
        fn holds(&self) -> bool {
            true
        }
        fn decide<'a>(
            &'a self,
            message: &'a WebSocketMessage,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = MessageVerdict> + Send + 'a>>
        {
            let verdict = match &message.content[..] {
                b"edit" => MessageVerdict::Replace(bytes::Bytes::from_static(b"edited!")),
                b"drop" => MessageVerdict::Drop,
                _ => MessageVerdict::Deliver,
            };
            Box::pin(std::future::ready(verdict))
        }
    }

    /// The frames in `bytes`: (opcode, final, unmasked payload, masked).
    fn frames_of(mut bytes: &[u8]) -> Vec<(OpCode, bool, Vec<u8>, bool)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = Cursor::new(bytes);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            let start = cursor.position() as usize;
            let mut payload = bytes[start..start + length as usize].to_vec();
            if let Some(mask) = header.mask {
                unmask(&mut payload, mask, 0);
            }
            frames.push((
                header.opcode,
                header.is_final,
                payload,
                header.mask.is_some(),
            ));
            bytes = &bytes[start + length as usize..];
        }
        frames
    }

    #[tokio::test]
    async fn held_messages_go_on_byte_for_byte_edited_or_not_at_all_and_control_frames_do_not_wait()
    {
        let mask = Some([5, 6, 7, 8]);
        let mut bytes = frame(false, false, 1, b"ke", mask);
        bytes.extend(frame(true, false, 9, b"ping", mask));
        bytes.extend(frame(true, false, 0, b"ep", mask));
        bytes.extend(frame(true, false, 1, b"edit", mask));
        bytes.extend(frame(true, false, 1, b"drop", mask));
        let kept = [
            frame(false, false, 1, b"ke", mask),
            frame(true, false, 0, b"ep", mask),
        ]
        .concat();
        for piece in [1, 5, 4096] {
            let controls = RelayControls {
                gate: Some(Arc::new(ByContent)),
                ..RelayControls::default()
            };
            let (received, sink) =
                run_with(bytes.clone(), piece, Deflate::default(), 1 << 20, controls).await;
            let frames = frames_of(&received);
            // The ping went on while "keep" was still being held.
            assert_eq!(frames[0].0, OpCode::Control(Control::Ping), "{frames:?}");
            let ping_len = frame(true, false, 9, b"ping", mask).len();
            assert_eq!(
                &received[ping_len..ping_len + kept.len()],
                &kept[..],
                "kept byte for byte"
            );
            let edited = &frames[3];
            assert_eq!(
                (edited.0, edited.1, &edited.2[..], edited.3),
                (OpCode::Data(Data::Text), true, &b"edited!"[..], true)
            );
            assert_eq!(frames.len(), 4, "the dropped message was not delivered");
            let messages = sink.messages.lock().unwrap();
            let fates: Vec<(&[u8], periscope_flow::MessageFate)> =
                messages.iter().map(|m| (&m.content[..], m.fate)).collect();
            assert_eq!(
                fates,
                vec![
                    (&b"ping"[..], periscope_flow::MessageFate::Relayed),
                    (&b"keep"[..], periscope_flow::MessageFate::Relayed),
                    (&b"edited!"[..], periscope_flow::MessageFate::Edited),
                    (&b"drop"[..], periscope_flow::MessageFate::Dropped),
                ]
            );
        }
    }

    #[tokio::test]
    async fn a_message_injected_towards_the_server_is_one_masked_frame_between_messages() {
        let (to_server, receiver) = tokio::sync::mpsc::unbounded_channel();
        to_server
            .send(Injected {
                opcode: WebSocketOpcode::Text,
                content: bytes::Bytes::from_static(b"from periscope"),
            })
            .unwrap();
        let controls = RelayControls {
            to_server: Some(receiver),
            ..RelayControls::default()
        };
        // The client's message comes a moment later, so the injection goes first.
        let bytes = frame(true, false, 1, b"from the client", Some([1, 1, 1, 1]));
        let (received, sink) = run_with(bytes, 4096, Deflate::default(), 1 << 20, controls).await;
        let frames = frames_of(&received);
        assert!(
            frames.contains(&(
                OpCode::Data(Data::Text),
                true,
                b"from periscope".to_vec(),
                true
            )),
            "{frames:?}"
        );
        assert!(frames.contains(&(
            OpCode::Data(Data::Text),
            true,
            b"from the client".to_vec(),
            true
        )));
        let messages = sink.messages.lock().unwrap();
        assert!(messages
            .iter()
            .any(|m| m.fate == periscope_flow::MessageFate::Injected
                && &m.content[..] == b"from periscope"));
    }

    #[tokio::test]
    async fn frames_pass_unchanged_and_fragmented_messages_are_reassembled() {
        let mask = Some([1, 2, 3, 4]);
        let mut bytes = frame(false, false, 1, b"hel", mask);
        bytes.extend(frame(true, false, 9, b"are you there", mask));
        bytes.extend(frame(true, false, 0, b"lo", mask));
        bytes.extend(frame(true, false, 2, &[0u8, 255, 7], mask));
        bytes.extend(frame(true, false, 8, b"\x03\xe8bye", mask));
        for piece in [1, 3, 7, 4096] {
            let (received, sink) = run(bytes.clone(), piece, Deflate::default(), 1 << 20).await;
            assert_eq!(received, bytes, "relayed byte for byte (pieces of {piece})");
            let messages = sink.messages.lock().unwrap();
            let summary: Vec<(WebSocketOpcode, &[u8], u32)> = messages
                .iter()
                .map(|m| (m.opcode, &m.content[..], m.frames))
                .collect();
            assert_eq!(
                summary,
                vec![
                    (WebSocketOpcode::Ping, &b"are you there"[..], 1),
                    (WebSocketOpcode::Text, &b"hello"[..], 2),
                    (WebSocketOpcode::Binary, &[0u8, 255, 7][..], 1),
                    (WebSocketOpcode::Close, &b"\x03\xe8bye"[..], 1),
                ]
            );
            assert!(messages.iter().all(|m| m.from_client));
            assert_eq!(
                *sink.closes.lock().unwrap(),
                vec![(true, Some(1000), Some("bye".to_string()))]
            );
        }
    }

    #[tokio::test]
    async fn recording_stops_at_the_limit_but_relaying_does_not() {
        let payload = vec![b'x'; 100_000];
        let bytes = frame(true, false, 2, &payload, Some([9, 8, 7, 6]));
        let (received, sink) = run(bytes.clone(), 5000, Deflate::default(), 1000).await;
        assert_eq!(received, bytes);
        let messages = sink.messages.lock().unwrap();
        assert_eq!(messages[0].size, 100_000);
        assert_eq!(messages[0].content.len(), 1000);
        assert!(messages[0].truncated);
    }

    #[tokio::test]
    async fn the_close_code_is_recorded_after_the_limit_is_used_up() {
        let mut bytes = frame(true, false, 2, &[7u8; 5000], Some([9, 8, 7, 6]));
        bytes.extend(frame(true, false, 8, b"\x0f\xa0done", Some([1, 2, 3, 4])));
        let (received, sink) = run(bytes.clone(), 1000, Deflate::default(), 1000).await;
        assert_eq!(received, bytes);
        assert_eq!(
            *sink.closes.lock().unwrap(),
            vec![(true, Some(4000), Some("done".to_string()))]
        );
        let messages = sink.messages.lock().unwrap();
        assert_eq!(messages[1].opcode, WebSocketOpcode::Close);
        assert!(messages[1].truncated && messages[1].content.is_empty());
    }

    #[tokio::test]
    async fn permessage_deflate_messages_are_recorded_inflated() {
        let deflate = Deflate::from_extensions(Some("permessage-deflate; client_max_window_bits"));
        assert!(deflate.enabled);
        // Two messages compressed with context takeover, as a browser would.
        let mut compressor = flate2::Compress::new(flate2::Compression::default(), false);
        let mut compress = |text: &[u8]| {
            let mut out = Vec::with_capacity(256);
            compressor
                .compress_vec(text, &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&DEFLATE_TAIL));
            out.truncate(out.len() - 4);
            out
        };
        let first = compress(b"hello hello hello");
        let second = compress(b"hello hello hello again");
        let mut bytes = frame(true, true, 1, &first, Some([1, 1, 1, 1]));
        bytes.extend(frame(true, true, 1, &second, Some([2, 2, 2, 2])));
        let (received, sink) = run(bytes.clone(), 3, deflate, 1 << 20).await;
        assert_eq!(received, bytes);
        let texts: Vec<String> = sink
            .messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.text().unwrap().to_owned())
            .collect();
        assert_eq!(texts, vec!["hello hello hello", "hello hello hello again"]);
    }

    #[test]
    fn extensions_header_is_understood() {
        let d = Deflate::from_extensions(Some(
            "x-other, permessage-deflate; server_no_context_takeover; client_max_window_bits=15",
        ));
        assert!(d.enabled && d.server_no_context_takeover && !d.client_no_context_takeover);
        assert!(!Deflate::from_extensions(Some("x-other")).enabled);
        assert!(!Deflate::from_extensions(None).enabled);
    }
}
