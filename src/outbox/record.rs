//! One stored change and its framing (see the module docs of `outbox` for the layout).

use crate::event::Op;

/// Length of the frame header: `u32` payload length + `u32` CRC-32.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// Fixed part of a payload: seq (8) + op (1) + flags (1) + resource length (4).
pub(super) const MIN_PAYLOAD_LEN: usize = 8 + 1 + 1 + 4;

const FLAG_ONLY: u8 = 0b001;
const FLAG_SNAPSHOT_AFTER: u8 = 0b010;
const FLAG_REDELIVERY_OF: u8 = 0b100;
const KNOWN_FLAGS: u8 = FLAG_ONLY | FLAG_SNAPSHOT_AFTER | FLAG_REDELIVERY_OF;

/// One accepted change as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub op: Op,
    pub resource: String,
    /// The change as the host pushed it (raw JSON text, may be many MiB).
    pub json: String,
    /// Restrict delivery to this replicator id.
    pub only: Option<String>,
    /// A full-sync snapshot is read after this seq.
    pub snapshot_after: Option<u64>,
    /// Id of the dead letter this entry re-sends.
    pub redelivery_of: Option<u64>,
}

impl Entry {
    /// The borrowed form, to append an owned entry without copying it.
    pub fn entry_ref(&self) -> EntryRef<'_> {
        EntryRef {
            seq: self.seq,
            op: self.op,
            resource: &self.resource,
            json: &self.json,
            only: self.only.as_deref(),
            snapshot_after: self.snapshot_after,
            redelivery_of: self.redelivery_of,
        }
    }
}

/// Borrowed form of [`Entry`] for appending without copying.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub seq: u64,
    pub op: Op,
    pub resource: &'a str,
    pub json: &'a str,
    pub only: Option<&'a str>,
    pub snapshot_after: Option<u64>,
    pub redelivery_of: Option<u64>,
}

impl EntryRef<'_> {
    /// The owned form.
    pub fn to_entry(&self) -> Entry {
        Entry {
            seq: self.seq,
            op: self.op,
            resource: self.resource.to_owned(),
            json: self.json.to_owned(),
            only: self.only.map(str::to_owned),
            snapshot_after: self.snapshot_after,
            redelivery_of: self.redelivery_of,
        }
    }

    /// Payload length in bytes (everything after the frame header).
    pub(super) fn payload_len(&self) -> u64 {
        let mut len = (MIN_PAYLOAD_LEN + self.resource.len() + self.json.len()) as u64;
        if let Some(only) = self.only {
            len += 4 + only.len() as u64;
        }
        if self.snapshot_after.is_some() {
            len += 8;
        }
        if self.redelivery_of.is_some() {
            len += 8;
        }
        len
    }
}

const fn op_code(op: Op) -> u8 {
    match op {
        Op::Inserted => 1,
        Op::Updated => 2,
        Op::Deleted => 3,
    }
}

const fn op_from_code(code: u8) -> Option<Op> {
    match code {
        1 => Some(Op::Inserted),
        2 => Some(Op::Updated),
        3 => Some(Op::Deleted),
        _ => None,
    }
}

/// CRC-32 of a record: covers the little-endian length field and the whole payload, so a
/// damaged length is caught as well as damaged content. `payload_parts` are concatenated.
pub(super) fn checksum(len_field: [u8; 4], payload_parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_field);
    for part in payload_parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Writes the whole frame except the trailing JSON bytes (header + payload prefix) into `buf`,
/// checksum included; the caller writes `buf` followed by `e.json`. Returns `Err(payload_len)`
/// when the payload would exceed `max_payload` bytes.
pub(super) fn encode_prefix(
    e: &EntryRef<'_>,
    buf: &mut Vec<u8>,
    max_payload: u64,
) -> Result<(), u64> {
    let payload_len = e.payload_len();
    if payload_len > max_payload || payload_len > u64::from(u32::MAX) {
        return Err(payload_len);
    }
    // Both checked against `payload_len`, which bounds every part.
    let len_field = (payload_len as u32).to_le_bytes();
    let mut flags = 0u8;
    if e.only.is_some() {
        flags |= FLAG_ONLY;
    }
    if e.snapshot_after.is_some() {
        flags |= FLAG_SNAPSHOT_AFTER;
    }
    if e.redelivery_of.is_some() {
        flags |= FLAG_REDELIVERY_OF;
    }
    buf.clear();
    buf.extend_from_slice(&len_field);
    buf.extend_from_slice(&[0; 4]); // checksum, filled in below
    buf.extend_from_slice(&e.seq.to_le_bytes());
    buf.push(op_code(e.op));
    buf.push(flags);
    buf.extend_from_slice(&(e.resource.len() as u32).to_le_bytes());
    buf.extend_from_slice(e.resource.as_bytes());
    if let Some(only) = e.only {
        buf.extend_from_slice(&(only.len() as u32).to_le_bytes());
        buf.extend_from_slice(only.as_bytes());
    }
    if let Some(v) = e.snapshot_after {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(v) = e.redelivery_of {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    let crc = checksum(len_field, &[&buf[FRAME_HEADER_LEN..], e.json.as_bytes()]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads fields off the front of a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or("a field runs past the end of the record")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn str(&mut self) -> Result<String, &'static str> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| "a string field is not UTF-8")
    }
}

/// Decodes a payload whose checksum was already verified. Takes the buffer by value so the
/// JSON text (usually most of it) becomes the entry's `json` without a second allocation.
pub(super) fn decode_payload(mut payload: Vec<u8>) -> Result<Entry, &'static str> {
    let mut r = Reader {
        bytes: &payload,
        pos: 0,
    };
    let seq = r.u64()?;
    let op = op_from_code(r.u8()?).ok_or("unknown op code")?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flag bits");
    }
    let resource = r.str()?;
    let only = if flags & FLAG_ONLY != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let snapshot_after = if flags & FLAG_SNAPSHOT_AFTER != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let redelivery_of = if flags & FLAG_REDELIVERY_OF != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let json_start = r.pos;
    payload.drain(..json_start);
    let json = String::from_utf8(payload).map_err(|_| "the JSON text is not UTF-8")?;
    Ok(Entry {
        seq,
        op,
        resource,
        json,
        only,
        snapshot_after,
        redelivery_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(e: &EntryRef<'_>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_prefix(e, &mut buf, u64::MAX).unwrap();
        buf.extend_from_slice(e.json.as_bytes());
        buf
    }

    /// Splits a frame, verifies it the way recovery does and decodes it.
    fn decode_frame(frame: &[u8]) -> Result<Entry, &'static str> {
        let len_field: [u8; 4] = frame[..4].try_into().unwrap();
        let crc = u32::from_le_bytes(frame[4..8].try_into().unwrap());
        let payload = &frame[FRAME_HEADER_LEN..];
        if u32::from_le_bytes(len_field) as usize != payload.len() {
            return Err("length");
        }
        if checksum(len_field, &[payload]) != crc {
            return Err("checksum");
        }
        decode_payload(payload.to_vec())
    }

    fn sample() -> Entry {
        Entry {
            seq: 0x0102_0304_0506_0708,
            op: Op::Updated,
            resource: "usuários📦".into(),
            json: r#"{"id":"ü","n":1}"#.into(),
            only: Some("pg-☃".into()),
            snapshot_after: Some(41),
            redelivery_of: Some(7),
        }
    }

    #[test]
    fn every_field_and_flag_combination_round_trips() {
        for op in [Op::Inserted, Op::Updated, Op::Deleted] {
            for bits in 0..8u8 {
                let mut e = sample();
                e.op = op;
                e.only = (bits & 1 != 0).then(|| "only".to_owned());
                e.snapshot_after = (bits & 2 != 0).then_some(u64::MAX);
                e.redelivery_of = (bits & 4 != 0).then_some(0);
                let f = frame(&e.entry_ref());
                assert_eq!(
                    f.len() as u64,
                    FRAME_HEADER_LEN as u64 + e.entry_ref().payload_len()
                );
                assert_eq!(decode_frame(&f).unwrap(), e);
            }
        }
    }

    #[test]
    fn empty_strings_round_trip() {
        let e = Entry {
            seq: 1,
            op: Op::Deleted,
            resource: String::new(),
            json: String::new(),
            only: Some(String::new()),
            snapshot_after: None,
            redelivery_of: None,
        };
        assert_eq!(decode_frame(&frame(&e.entry_ref())).unwrap(), e);
        assert_eq!(e.entry_ref().to_entry(), e);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let f = frame(&sample().entry_ref());
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut bad = f.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode_frame(&bad).is_err(),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn invalid_payloads_are_rejected_not_panicking() {
        assert!(decode_payload(Vec::new()).is_err());
        let mut p = frame(&sample().entry_ref())[FRAME_HEADER_LEN..].to_vec();
        p[8] = 9; // op code
        assert_eq!(decode_payload(p.clone()), Err("unknown op code"));
        p[8] = 1;
        p[9] = 0x80; // flags
        assert_eq!(decode_payload(p.clone()), Err("unknown flag bits"));
        p[9] = 0b111;
        p[10..14].copy_from_slice(&u32::MAX.to_le_bytes()); // resource length
        assert!(decode_payload(p).is_err());
    }

    #[test]
    fn oversized_payload_is_refused_with_its_length() {
        let e = sample();
        let len = e.entry_ref().payload_len();
        let mut buf = Vec::new();
        assert_eq!(encode_prefix(&e.entry_ref(), &mut buf, len - 1), Err(len));
        assert!(encode_prefix(&e.entry_ref(), &mut buf, len).is_ok());
    }
}
