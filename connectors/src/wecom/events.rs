//! WeCom callbacks (docs/vendors/wecom.md), over the shared WXBizMsgCrypt format
//! ([`crate::wxbiz`]):
//!
//! - URL verification: `GET url?msg_signature=S&timestamp=T&nonce=N&echostr=E`: check `S` over
//!   `E`, decrypt `E` and answer the bare plaintext (within 1 s).
//! - Events and messages: `POST url?msg_signature=S&timestamp=T&nonce=N` with
//!   `<xml><ToUserName/><Encrypt/><AgentID/></xml>`; the signature covers the Encrypt text; the
//!   decrypted buffer ends with the receive id (the corp id), checked in constant time; the
//!   timestamp must be inside a window; the plaintext is XML again (`MsgType`, `Event`,
//!   `ChangeType`, …) and becomes the event's JSON payload (element → string, nested elements →
//!   object, repeated elements → array).
//! - Reply 200 within 5 s (an empty body means "no reply"), or an encrypted reply
//!   (`<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`), see
//!   [`WecomReceiver::encrypted_reply`].
//!
//! De-duplication: `MsgId` for messages; events have none, so their id is
//! `FromUserName:CreateTime:` + a hash of the decrypted XML (a WeCom retry carries the same
//! plaintext; a replayed request the same ciphertext).

use std::collections::HashMap;
#[cfg(test)]
use std::sync::Arc;
use std::time::Duration;

use quick_xml::events::Event as XmlEvent;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::capability::{CallbackError, CallbackReply, RawEvent};
#[cfg(test)]
use crate::capability::{CallbackOutcome, EventDedup};
use crate::crypto::sha256;
use crate::receiver::{self, Incoming, Limits, Opened, Receiver, VendorCallbacks};
use crate::wecom::VENDOR;
use crate::wxbiz::{self, WxBizError, WxBizMsgCrypt};

/// Largest nesting accepted in callback XML.
const MAX_DEPTH: usize = 16;

/// Parses a WeCom XML document into the JSON object of its root element's children.
/// Text and CDATA become strings; an element with child elements becomes an object; a name
/// seen twice becomes an array. Attributes are ignored (WeCom sends none).
pub fn parse_xml(xml: &str) -> Result<Map<String, Value>, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    // (name, children, text) per open element
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<Map<String, Value>> = None;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML error at {}: {e}", reader.buffer_position()))?;
        match ev {
            XmlEvent::Start(s) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err("XML nested too deeply".into());
                }
                stack.push((s.name().as_ref().to_string(), Map::new(), String::new()));
            }
            XmlEvent::Empty(s) => {
                let name = s.name().as_ref().to_string();
                match stack.last_mut() {
                    Some((_, children, _)) => insert(children, name, Value::String(String::new())),
                    None => root = Some(Map::new()),
                }
            }
            XmlEvent::Text(t) => {
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            XmlEvent::CData(c) => {
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push_str(&c.into_inner());
                }
            }
            XmlEvent::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("unknown entity &{other};")),
                    },
                    Err(e) => return Err(format!("bad character reference: {e}")),
                };
                if let Some((_, _, text)) = stack.last_mut() {
                    text.push(ch);
                }
            }
            XmlEvent::End(_) => {
                let Some((name, children, text)) = stack.pop() else {
                    return Err("unbalanced end tag".into());
                };
                let value = if children.is_empty() {
                    Value::String(text.trim().to_string())
                } else {
                    Value::Object(children)
                };
                match stack.last_mut() {
                    Some((_, parent, _)) => insert(parent, name, value),
                    None => {
                        root = Some(match value {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        })
                    }
                }
            }
            XmlEvent::Eof => break,
            XmlEvent::Decl(_) | XmlEvent::Comment(_) | XmlEvent::PI(_) => {}
            XmlEvent::DocType(_) => return Err("DOCTYPE is not allowed".into()),
        }
    }
    if !stack.is_empty() {
        return Err("unexpected end of XML".into());
    }
    root.ok_or_else(|| "no root element".to_string())
}

fn insert(m: &mut Map<String, Value>, name: String, v: Value) {
    match m.get_mut(&name) {
        None => {
            m.insert(name, v);
        }
        Some(Value::Array(a)) => a.push(v),
        Some(prev) => {
            let first = prev.take();
            *prev = Value::Array(vec![first, v]);
        }
    }
}

/// `<![CDATA[…]]>`, splitting any `]]>` inside.
pub fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// Renders a JSON object as WeCom XML under `<xml>`: strings in CDATA, numbers and booleans
/// bare, objects nested, arrays as repeated elements.
pub fn to_xml(fields: &Map<String, Value>) -> String {
    let mut out = String::from("<xml>");
    write_fields(&mut out, fields);
    out.push_str("</xml>");
    out
}

fn write_fields(out: &mut String, fields: &Map<String, Value>) {
    for (k, v) in fields {
        write_value(out, k, v);
    }
}

fn write_value(out: &mut String, k: &str, v: &Value) {
    match v {
        Value::Array(a) => {
            for x in a {
                write_value(out, k, x);
            }
        }
        Value::Object(m) => {
            out.push_str(&format!("<{k}>"));
            write_fields(out, m);
            out.push_str(&format!("</{k}>"));
        }
        Value::String(s) => out.push_str(&format!("<{k}>{}</{k}>", cdata(s))),
        Value::Null => out.push_str(&format!("<{k}></{k}>")),
        other => out.push_str(&format!("<{k}>{other}</{k}>")),
    }
}

/// The POST body WeCom sends: `<xml><ToUserName/><Encrypt/><AgentID/></xml>` (AgentID only on
/// app callbacks).
pub fn envelope_xml(to_user: &str, encrypt: &str, agent_id: Option<i64>) -> String {
    let agent = agent_id
        .map(|a| format!("<AgentID>{}</AgentID>", cdata(&a.to_string())))
        .unwrap_or_default();
    format!(
        "<xml><ToUserName>{}</ToUserName><Encrypt>{}</Encrypt>{agent}</xml>",
        cdata(to_user),
        cdata(encrypt)
    )
}

/// The encrypted reply envelope.
pub fn reply_envelope_xml(encrypt: &str, signature: &str, timestamp: i64, nonce: &str) -> String {
    format!(
        "<xml><Encrypt>{}</Encrypt><MsgSignature>{}</MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce>{}</Nonce></xml>",
        cdata(encrypt),
        cdata(signature),
        cdata(nonce)
    )
}

/// A passive text reply's plaintext: ToUserName is the member, FromUserName the corp.
pub fn text_reply_xml(
    to_user: &str,
    corp_id: &str,
    agent_id: i64,
    content: &str,
    create_time: i64,
) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{create_time}</CreateTime><MsgType>{}</MsgType><Content>{}</Content><AgentID>{agent_id}</AgentID></xml>",
        cdata(to_user),
        cdata(corp_id),
        cdata("text"),
        cdata(content)
    )
}

/// Builds a callback exactly as WeCom sends it (for the sandbox and tests): the query string
/// (`msg_signature`, `timestamp`, `nonce`) and the XML body around the encrypted `plaintext`.
pub fn build_callback(
    crypt: &WxBizMsgCrypt,
    receive_id: &str,
    agent_id: Option<i64>,
    plaintext: &str,
    timestamp: i64,
    nonce: &str,
) -> (Vec<(String, String)>, String) {
    let enc = crypt.encrypt(plaintext.as_bytes(), receive_id);
    let ts = timestamp.to_string();
    let sig = crypt.signature(&ts, nonce, &enc);
    (
        vec![
            ("msg_signature".into(), sig),
            ("timestamp".into(), ts),
            ("nonce".into(), nonce.to_string()),
        ],
        envelope_xml(receive_id, &enc, agent_id),
    )
}

/// Callback settings of one WeCom app (or the contact-sync callback).
#[derive(Clone)]
pub struct CallbackConfig {
    pub token: SecretString,
    /// The 43-character EncodingAESKey.
    pub encoding_aes_key: SecretString,
    /// The receive id every decrypted buffer must end with: the corp id (a suite id for
    /// third-party apps).
    pub receive_id: String,
    /// Accepted distance between `timestamp` and now.
    pub timestamp_window: Duration,
    pub max_body_bytes: usize,
}

impl CallbackConfig {
    pub fn new(
        token: SecretString,
        encoding_aes_key: SecretString,
        receive_id: impl Into<String>,
    ) -> Self {
        Self {
            token,
            encoding_aes_key,
            receive_id: receive_id.into(),
            timestamp_window: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Verifies and decrypts WeCom callbacks.
pub type WecomReceiver = Receiver<WecomCallbacks>;

/// WeCom's part of [`WecomReceiver`]: the WXBizMsgCrypt crypto in XML and the receive id.
pub struct WecomCallbacks {
    crypt: WxBizMsgCrypt,
    receive_id: String,
}

impl std::fmt::Debug for WecomCallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomReceiver")
            .field("receive_id", &self.receive_id)
            .finish_non_exhaustive()
    }
}

fn empty_reply() -> CallbackReply {
    receiver::reply("text/plain; charset=utf-8", Vec::new())
}

fn wx_err(e: WxBizError) -> CallbackError {
    e.into_callback(VENDOR, WxBizError::wecom_code)
}

impl WecomReceiver {
    /// The crypto, for building replies or test callbacks.
    pub fn crypt(&self) -> &WxBizMsgCrypt {
        &self.vendor().crypt
    }

    /// An encrypted passive reply carrying `plaintext_xml` (e.g. [`text_reply_xml`]).
    pub fn encrypted_reply(
        &self,
        plaintext_xml: &str,
        timestamp: i64,
        nonce: &str,
    ) -> CallbackReply {
        let v = self.vendor();
        let enc = v.crypt.encrypt(plaintext_xml.as_bytes(), &v.receive_id);
        let sig = v.crypt.signature(&timestamp.to_string(), nonce, &enc);
        receiver::reply(
            "application/xml; charset=utf-8",
            reply_envelope_xml(&enc, &sig, timestamp, nonce).into_bytes(),
        )
    }
}

impl VendorCallbacks for WecomCallbacks {
    type Config = CallbackConfig;
    type Params = HashMap<String, String>;
    const VENDOR: &'static str = VENDOR;

    fn configure(cfg: CallbackConfig) -> Result<(Self, Limits), crate::ConnectorError> {
        let crypt = WxBizMsgCrypt::for_receiver(
            VENDOR,
            cfg.token,
            &cfg.encoding_aes_key,
            &cfg.receive_id,
            "callback settings",
            "callback receive id (corp id) is empty",
        )?;
        let limits = Limits::new(cfg.timestamp_window, cfg.max_body_bytes);
        let callbacks = Self {
            crypt,
            receive_id: cfg.receive_id,
        };
        Ok((callbacks, limits))
    }

    /// `req.params`: the query, already URL-decoded.
    fn open(&self, req: Incoming<'_, HashMap<String, String>>) -> Result<Opened, CallbackError> {
        let (sig, ts, nonce) = wxbiz::signed_query(
            req.params,
            [&["msg_signature"], &["timestamp"], &["nonce"]],
            false,
        )?;
        req.window.check(ts)?;

        if let Some(echostr) = req.params.get("echostr") {
            // base64 has no spaces: a '+' that reached us unescaped was decoded as a space.
            let echostr = echostr.replace(' ', "+");
            let plain = self
                .crypt
                .open(ts, nonce, &echostr, sig, &self.receive_id)
                .map_err(wx_err)?;
            return Ok(Opened::Handshake(receiver::reply(
                "text/plain; charset=utf-8",
                plain,
            )));
        }

        let text = std::str::from_utf8(req.body)
            .map_err(|_| CallbackError::Malformed("body is not UTF-8".into()))?;
        let outer = parse_xml(text).map_err(CallbackError::Malformed)?;
        let encrypt = outer
            .get("Encrypt")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CallbackError::Malformed("no Encrypt element".into()))?;
        // The signature is checked first; after it, every failure is answered alike
        // (receiver::opaque), whatever the decryption found.
        let plain = self
            .crypt
            .open(ts, nonce, encrypt, sig, &self.receive_id)
            .map_err(wx_err)?;
        let plain = String::from_utf8(plain)
            .map_err(|_| receiver::opaque(VENDOR, "decrypted body is not UTF-8"))?;
        let payload = parse_xml(&plain).map_err(|e| receiver::opaque(VENDOR, e))?;
        let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
        let msg_type = s("MsgType");
        if msg_type.is_empty() {
            return Err(receiver::opaque(VENDOR, "no MsgType"));
        }
        let event_type = if msg_type == "event" {
            match (s("Event"), s("ChangeType")) {
                ("", _) => return Err(receiver::opaque(VENDOR, "event without Event")),
                (e, "") => e.to_string(),
                (e, c) => format!("{e}.{c}"),
            }
        } else {
            format!("message.{msg_type}")
        };
        let create_time = payload
            .get("CreateTime")
            .and_then(Value::as_str)
            .and_then(|c| c.parse::<i64>().ok());
        let event_id = match payload.get("MsgId").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => format!("msg:{id}"),
            _ => format!(
                "{}:{}:{}",
                s("FromUserName"),
                s("CreateTime"),
                &hex::encode(sha256(plain.as_bytes()))[..16]
            ),
        };
        Ok(Opened::event(
            RawEvent {
                vendor: VENDOR,
                event_id,
                event_type,
                created_at_ms: create_time.and_then(|t| t.checked_mul(1000)),
                payload: Value::Object(payload),
            },
            empty_reply(),
        ))
    }
}

/// The records a `change_contact` event names, as (entity, id): `UserID` for
/// `*_user` changes, `Id` for `*_party` (department) changes; `None` for other events.
pub fn contact_records(
    event_type: &str,
    payload: &Value,
) -> Option<Vec<(crate::capability::Entity, String)>> {
    use crate::capability::Entity;
    let change = event_type.strip_prefix("change_contact.")?;
    if change.ends_with("_user") {
        let id = payload.get("UserID")?.as_str()?;
        Some(vec![(Entity::User, id.to_owned())])
    } else if change.ends_with("_party") {
        let id = payload.get("Id")?;
        let id = id
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| id.to_string());
        Some(vec![(Entity::Department, id)])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::InMemoryDedup;
    use serde_json::json;

    const A_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const A_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const A_CORP: &str = "ww1436e0e65a779aee";
    const A_ECHO: &str =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    const A_POST: &str = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+";

    const B_TOKEN: &str = "123456";
    const B_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    const B_CORP: &str = "wx49f0ab532d5d035a";
    const B_ECHO: &str =
        "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";
    const B_POST: &str = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";

    fn receiver(token: &str, key: &str, corp: &str) -> WecomReceiver {
        WecomReceiver::new(
            CallbackConfig::new(token.to_string().into(), key.to_string().into(), corp),
            Arc::new(InMemoryDedup::default()),
        )
        .unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn official_sample_vector_a_get_and_post() {
        let r = receiver(A_TOKEN, A_KEY, A_CORP);
        let get = q(&[
            ("msg_signature", "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb"),
            ("timestamp", "1476416373"),
            ("nonce", "47744683"),
            ("echostr", A_ECHO),
        ]);
        match r.handle_at(&get, b"", 1476416373).await.unwrap() {
            CallbackOutcome::Handshake { reply } => {
                assert_eq!(reply.status, 200);
                assert_eq!(reply.body, b"1288432023552776189");
            }
            other => panic!("{other:?}"),
        }
        // An echostr whose '+' arrived as ' ' (unescaped in the query) still verifies.
        let mut spaced = get.clone();
        spaced.insert("echostr".into(), A_ECHO.replace('+', " "));
        assert!(matches!(
            r.handle_at(&spaced, b"", 1476416373).await,
            Ok(CallbackOutcome::Handshake { .. })
        ));

        let post = q(&[
            ("msg_signature", "0c3914025cb4b4d68103f6bfc8db550f79dcf48e"),
            ("timestamp", "1476422779"),
            ("nonce", "1597212914"),
        ]);
        let body = envelope_xml(A_CORP, A_POST, Some(1000002));
        match r
            .handle_at(&post, body.as_bytes(), 1476422779)
            .await
            .unwrap()
        {
            CallbackOutcome::Event { event, reply } => {
                assert_eq!(event.event_type, "message.text");
                assert_eq!(event.event_id, "msg:1456453720");
                assert_eq!(event.created_at_ms, Some(1476422779000));
                assert_eq!(event.payload["Content"], "你好");
                assert_eq!(event.payload["FromUserName"], "ChenJiaShun");
                assert_eq!(event.payload["AgentID"], "1000002");
                assert_eq!(reply.status, 200);
                assert!(reply.body.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // The same request again is a replay: acknowledged, not processed twice.
        assert!(matches!(
            r.handle_at(&post, body.as_bytes(), 1476422779).await,
            Ok(CallbackOutcome::Duplicate { .. })
        ));
    }

    #[tokio::test]
    async fn wechatpy_vector_b_get_post_and_deterministic_reply() {
        let r = receiver(B_TOKEN, B_KEY, B_CORP);
        let get = q(&[
            ("msg_signature", "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"),
            ("timestamp", "1411443780"),
            ("nonce", "437374425"),
            ("echostr", B_ECHO),
        ]);
        let CallbackOutcome::Handshake { reply } =
            r.handle_at(&get, b"", 1411443780).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(reply.body, b"5927782489442352469");
        let post = q(&[
            ("msg_signature", "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"),
            ("timestamp", "1411525903"),
            ("nonce", "461056294"),
        ]);
        let body = envelope_xml(B_CORP, B_POST, Some(1));
        let CallbackOutcome::Event { event, .. } = r
            .handle_at(&post, body.as_bytes(), 1411525903)
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(event.payload["Content"], "test");
        assert_eq!(event.payload["FromUserName"], "messense");
        assert_eq!(event.event_id, "msg:4363689963896700987");
        assert_eq!(event.payload["AgentID"], "1");

        // wechatpy's deterministic encrypt, and the reply envelope around it.
        let plain = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
        let enc = r
            .crypt()
            .encrypt_with(plain.as_bytes(), B_CORP, b"1234567890123456");
        assert!(enc.starts_with("9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5h"));
        let sig = r.crypt().signature("1411525903", "461056294", &enc);
        assert_eq!(sig, "407518b7649e86ef23978113f92d27afa9296533");
        let env = parse_xml(&reply_envelope_xml(&enc, &sig, 1411525903, "461056294")).unwrap();
        assert_eq!(env["Encrypt"], enc.as_str());
        assert_eq!(env["MsgSignature"], sig.as_str());
        assert_eq!(env["TimeStamp"], "1411525903");
        assert_eq!(env["Nonce"], "461056294");
        // The parsed plaintext matches wechatpy's fields.
        let p = parse_xml(plain).unwrap();
        assert_eq!(p["ToUserName"], "messense");
        assert_eq!(p["CreateTime"], "1411525903");
    }

    #[tokio::test]
    async fn encrypted_reply_opens_with_the_same_keys() {
        let r = receiver(B_TOKEN, B_KEY, B_CORP);
        let plain = text_reply_xml("messense", B_CORP, 1, "收到 <ok> & ]]> done", 1411525903);
        let reply = r.encrypted_reply(&plain, 1411525903, "n1");
        let env = parse_xml(std::str::from_utf8(&reply.body).unwrap()).unwrap();
        let enc = env["Encrypt"].as_str().unwrap();
        let out = r
            .crypt()
            .open(
                "1411525903",
                "n1",
                enc,
                env["MsgSignature"].as_str().unwrap(),
                B_CORP,
            )
            .unwrap();
        let p = parse_xml(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(p["Content"], "收到 <ok> & ]]> done");
        assert_eq!(p["ToUserName"], "messense");
        assert_eq!(p["FromUserName"], B_CORP);
    }

    #[tokio::test]
    async fn a_create_time_too_large_for_milliseconds_is_no_time_not_a_panic() {
        // Found by the wecom_callback fuzz target: `CreateTime * 1000` overflowed.
        let r = receiver(B_TOKEN, B_KEY, B_CORP);
        let now = 1_700_000_000;
        let ev = "<xml><ToUserName>c</ToUserName><FromUserName>sys</FromUserName><CreateTime>9223372036854776</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>x</UserID></xml>";
        let (qs, body) = build_callback(r.crypt(), B_CORP, None, ev, now, "n9");
        let query: HashMap<String, String> = qs.into_iter().collect();
        match r.handle_at(&query, body.as_bytes(), now).await {
            Ok(CallbackOutcome::Event { event, .. }) => assert_eq!(event.created_at_ms, None),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn rejects_bad_signature_wrong_receive_id_stale_and_missing() {
        let r = receiver(B_TOKEN, B_KEY, B_CORP);
        let now = 1_700_000_000;
        let ev = "<xml><ToUserName>wx49f0ab532d5d035a</ToUserName><FromUserName>sys</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>zhangsan</UserID></xml>";
        let (qs, body) = build_callback(r.crypt(), B_CORP, None, ev, now, "n1");
        let query: HashMap<String, String> = qs.into_iter().collect();
        // bad signature
        let mut bad = query.clone();
        bad.insert("msg_signature".into(), "0".repeat(40));
        assert_eq!(
            r.handle_at(&bad, body.as_bytes(), now).await,
            Err(CallbackError::BadSignature)
        );
        // stale timestamp (and one from the future)
        assert_eq!(
            r.handle_at(&query, body.as_bytes(), now + 301).await,
            Err(CallbackError::StaleTimestamp)
        );
        assert_eq!(
            r.handle_at(&query, body.as_bytes(), now - 301).await,
            Err(CallbackError::StaleTimestamp)
        );
        // missing parameters
        assert_eq!(
            r.handle_at(&HashMap::new(), body.as_bytes(), now).await,
            Err(CallbackError::MissingSignature)
        );
        // encrypted for another corp, correctly signed: receive id mismatch
        let (qs2, body2) = build_callback(r.crypt(), "wwOTHERCORP", None, ev, now, "n2");
        let q2: HashMap<String, String> = qs2.into_iter().collect();
        assert_eq!(
            r.handle_at(&q2, body2.as_bytes(), now).await,
            Err(CallbackError::Decrypt(receiver::OPAQUE.into()))
        );
        // not XML / no Encrypt
        assert!(matches!(
            r.handle_at(&query, b"{\"a\":1}", now).await,
            Err(CallbackError::Malformed(_))
        ));
        // none of the rejected requests was recorded: the genuine one is still new
        let CallbackOutcome::Event { event, .. } =
            r.handle_at(&query, body.as_bytes(), now).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(event.event_type, "change_contact.delete_user");
        assert_eq!(event.payload["UserID"], "zhangsan");
        assert!(event.event_id.starts_with("sys:1700000000:"));
        // replay of the same request inside the window
        assert!(matches!(
            r.handle_at(&query, body.as_bytes(), now + 10).await,
            Ok(CallbackOutcome::Duplicate { .. })
        ));
        // oversized body
        let mut cfg =
            CallbackConfig::new(B_TOKEN.to_string().into(), B_KEY.to_string().into(), B_CORP);
        cfg.max_body_bytes = 10;
        let small = WecomReceiver::new(cfg, Arc::new(InMemoryDedup::default())).unwrap();
        assert_eq!(
            small.handle_at(&query, body.as_bytes(), now).await,
            Err(CallbackError::TooLarge(10))
        );
    }

    #[test]
    fn xml_roundtrip_nested_repeated_and_escaped() {
        let mut m = Map::new();
        m.insert("MsgType".into(), json!("event"));
        m.insert("CreateTime".into(), json!(1700000000));
        m.insert(
            "ExtAttr".into(),
            json!({"Item": [{"Name": "工号", "Type": 0, "Text": {"Value": "E1"}}, {"Name": "b", "Type": 0, "Text": {"Value": "x]]>y"}}]}),
        );
        let xml = to_xml(&m);
        let back = parse_xml(&xml).unwrap();
        assert_eq!(back["CreateTime"], "1700000000");
        assert_eq!(back["ExtAttr"]["Item"][0]["Name"], "工号");
        assert_eq!(back["ExtAttr"]["Item"][1]["Text"]["Value"], "x]]>y");
        let p =
            parse_xml("<?xml version=\"1.0\"?><xml><A>a &amp; b &#20320;</A><B/></xml>").unwrap();
        assert_eq!(p["A"], "a & b 你");
        assert_eq!(p["B"], "");
        assert!(parse_xml("<xml><A>").is_err());
        assert!(parse_xml("<!DOCTYPE x [<!ENTITY e \"e\">]><xml/>").is_err());
        assert!(parse_xml("<xml><A>&e;</A></xml>").is_err());
        assert!(parse_xml("not xml").is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        let d: Arc<dyn EventDedup> = Arc::new(InMemoryDedup::default());
        assert!(
            WecomReceiver::new(
                CallbackConfig::new("t".to_string().into(), "short".to_string().into(), "ww"),
                d.clone()
            )
            .is_err()
        );
        assert!(
            WecomReceiver::new(
                CallbackConfig::new("t".to_string().into(), B_KEY.to_string().into(), ""),
                d
            )
            .is_err()
        );
    }
}
