//! Subpackages: a pure reassembler for uplink transfers and the splitter for large downlinks.
//!
//! Owns the transfer table keyed by phone + message id + total (never by serial continuity: real
//! terminals skip serials and send packets out of order), the memory bounds, the list of missing
//! indexes for 0x8003, and the timeout decision, which takes the caller's `now` in milliseconds.
//! Must not read clocks, send anything or decode bodies: it returns what the session should do.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::error::{EncodeError, ReassemblyError};
use super::frame::Packet;
use super::header::{Header, Phone, Subpackage, MAX_BODY_LEN};

/// Bounds and timing of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest `total` accepted for one transfer.
    pub max_packets: u16,
    /// Most body bytes one transfer may hold.
    pub max_transfer_bytes: usize,
    /// Most body bytes all transfers together may hold.
    pub max_total_bytes: usize,
    /// Most transfers in progress at once.
    pub max_transfers: usize,
    /// Time without a new packet after which missing packets are requested (0x8003).
    pub timeout_ms: u64,
    /// Resend requests per transfer before it is abandoned.
    pub max_resend_requests: u8,
}

impl Default for ReassemblyLimits {
    /// 2048 packets / 2 MiB per transfer (a large 0x0801 photo), 8 MiB and 8 transfers in all,
    /// 30 s timeout, 3 resend requests.
    fn default() -> Self {
        ReassemblyLimits {
            max_packets: 2048,
            max_transfer_bytes: 2 * 1024 * 1024,
            max_total_bytes: 8 * 1024 * 1024,
            max_transfers: 8,
            timeout_ms: 30_000,
            max_resend_requests: 3,
        }
    }
}

/// What identifies one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferKey {
    /// Terminal phone.
    pub phone: Phone,
    /// Message id.
    pub msg_id: u16,
    /// Packet total.
    pub total: u16,
}

/// A completed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembled {
    /// Packet 1's header with the subpackage item removed; decode with `Message::from_parts`.
    pub header: Header,
    /// The packets' bodies joined in index order.
    pub body: Vec<u8>,
    /// How many packets made it up.
    pub total: u16,
    /// Each packet's serial, in index order.
    pub serials: Vec<u16>,
}

/// Result of [`Reassembler::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The transfer is complete.
    Complete(Reassembled),
    /// Stored; more packets are needed.
    Pending {
        /// Packets held.
        received: u16,
        /// Packets expected.
        total: u16,
        /// True when this packet repeated an index with different bytes: a resend is
        /// byte-identical by the standard, so the old transfer was dropped and a new one started.
        restarted: bool,
    },
    /// The same index with the same bytes was already held (a resend); nothing changed.
    Duplicate,
}

/// What the session should do for a transfer that went quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Send 0x8003 asking for `missing` (see `reply::resend_request`).
    RequestResend {
        /// The transfer.
        key: TransferKey,
        /// A header of the transfer (phone and layout for the request).
        header: Header,
        /// Serial of packet 1 (derived from another packet's serial when packet 1 is missing).
        first_serial: u16,
        /// Missing indexes, ascending.
        missing: Vec<u16>,
    },
    /// Resend requests are used up; the transfer was dropped.
    Abandon {
        /// The transfer.
        key: TransferKey,
        /// Indexes that never arrived.
        missing: Vec<u16>,
    },
}

#[derive(Debug)]
struct Transfer {
    packets: BTreeMap<u16, (u16, Header, Bytes)>,
    bytes: usize,
    deadline_ms: u64,
    resend_requests: u8,
}

impl Transfer {
    fn missing(&self, total: u16) -> Vec<u16> {
        (1..=total).filter(|i| !self.packets.contains_key(i)).collect()
    }

    /// Serial of packet 1, or one derived from the lowest index held assuming the standard's
    /// consecutive serials (only used to fill 0x8003's "original serial").
    fn first_serial(&self) -> u16 {
        self.packets
            .iter()
            .next()
            .map_or(0, |(index, (serial, _, _))| serial.wrapping_sub(index.wrapping_sub(1)))
    }

    fn any_header(&self) -> Option<Header> {
        self.packets.values().next().map(|(_, header, _)| *header)
    }
}

/// Reassembles subpackaged uplink transfers. One per connection (or one shared; keys include the
/// phone). Memory is bounded by [`ReassemblyLimits`]; packets past a bound are refused with an
/// error and not stored.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    transfers: BTreeMap<TransferKey, Transfer>,
    total_bytes: usize,
}

impl Reassembler {
    /// A reassembler with the given bounds.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            transfers: BTreeMap::new(),
            total_bytes: 0,
        }
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// True when nothing is in progress.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// Body bytes held across all transfers.
    pub fn held_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Missing indexes of a transfer in progress.
    pub fn missing(&self, key: &TransferKey) -> Option<Vec<u16>> {
        self.transfers.get(key).map(|t| t.missing(key.total))
    }

    /// Stores one subpackaged packet received at `now_ms`.
    pub fn push(&mut self, packet: &Packet, now_ms: u64) -> Result<PushOutcome, ReassemblyError> {
        let header = packet.header;
        let Subpackage { total, index } = header.subpackage.ok_or(ReassemblyError::NotSubpackaged)?;
        if total == 0 || index == 0 || index > total {
            return Err(ReassemblyError::BadIndex { index, total });
        }
        if total > self.limits.max_packets {
            return Err(ReassemblyError::TooManyPackets {
                total,
                max: self.limits.max_packets,
            });
        }
        let key = TransferKey {
            phone: header.phone,
            msg_id: header.msg_id,
            total,
        };
        let mut restarted = false;
        if let Some(existing) = self.transfers.get(&key) {
            if let Some((_, _, held)) = existing.packets.get(&index) {
                if *held == packet.body {
                    return Ok(PushOutcome::Duplicate);
                }
                self.drop_transfer(&key);
                restarted = true;
            }
        }
        if !self.transfers.contains_key(&key) && self.transfers.len() >= self.limits.max_transfers {
            return Err(ReassemblyError::TooManyTransfers {
                max: self.limits.max_transfers,
            });
        }
        let body_len = packet.body.len();
        let held = self.transfers.get(&key).map_or(0, |t| t.bytes);
        let transfer_bytes = held.saturating_add(body_len);
        if transfer_bytes > self.limits.max_transfer_bytes {
            return Err(ReassemblyError::TransferTooLarge {
                bytes: transfer_bytes,
                max: self.limits.max_transfer_bytes,
            });
        }
        let all_bytes = self.total_bytes.saturating_add(body_len);
        if all_bytes > self.limits.max_total_bytes {
            return Err(ReassemblyError::BudgetExceeded {
                bytes: all_bytes,
                max: self.limits.max_total_bytes,
            });
        }
        let deadline_ms = now_ms.saturating_add(self.limits.timeout_ms);
        let transfer = self.transfers.entry(key).or_insert_with(|| Transfer {
            packets: BTreeMap::new(),
            bytes: 0,
            deadline_ms,
            resend_requests: 0,
        });
        transfer
            .packets
            .insert(index, (header.serial, header, packet.body.clone()));
        transfer.bytes = transfer_bytes;
        transfer.deadline_ms = deadline_ms;
        self.total_bytes = all_bytes;
        let received = u16::try_from(transfer.packets.len()).unwrap_or(u16::MAX);
        if received < total {
            return Ok(PushOutcome::Pending {
                received,
                total,
                restarted,
            });
        }
        let Some(done) = self.drop_transfer(&key) else {
            return Ok(PushOutcome::Pending {
                received,
                total,
                restarted,
            });
        };
        let mut body = Vec::with_capacity(done.bytes);
        let mut serials = Vec::with_capacity(done.packets.len());
        let mut first_header = None;
        for (serial, header, bytes) in done.packets.values() {
            first_header.get_or_insert(*header);
            serials.push(*serial);
            body.extend_from_slice(bytes);
        }
        let mut header = first_header.unwrap_or(header);
        header.subpackage = None;
        Ok(PushOutcome::Complete(Reassembled {
            header,
            body,
            total,
            serials,
        }))
    }

    /// Decides what to do with transfers that had no packet for `timeout_ms` by `now_ms`:
    /// request the missing packets again, or abandon the transfer once the requests are used up.
    pub fn poll_timeouts(&mut self, now_ms: u64) -> Vec<TimeoutAction> {
        let due: Vec<TransferKey> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.deadline_ms <= now_ms)
            .map(|(key, _)| *key)
            .collect();
        let mut actions = Vec::with_capacity(due.len());
        for key in due {
            let Some(transfer) = self.transfers.get_mut(&key) else {
                continue;
            };
            let missing = transfer.missing(key.total);
            if transfer.resend_requests < self.limits.max_resend_requests {
                transfer.resend_requests += 1;
                transfer.deadline_ms = now_ms.saturating_add(self.limits.timeout_ms);
                if let Some(header) = transfer.any_header() {
                    actions.push(TimeoutAction::RequestResend {
                        key,
                        header,
                        first_serial: transfer.first_serial(),
                        missing,
                    });
                }
            } else {
                self.drop_transfer(&key);
                actions.push(TimeoutAction::Abandon { key, missing });
            }
        }
        actions
    }

    /// Drops every transfer (e.g. when the connection closes).
    pub fn clear(&mut self) {
        self.transfers.clear();
        self.total_bytes = 0;
    }

    fn drop_transfer(&mut self, key: &TransferKey) -> Option<Transfer> {
        let transfer = self.transfers.remove(key)?;
        self.total_bytes = self.total_bytes.saturating_sub(transfer.bytes);
        Some(transfer)
    }
}

/// Splits a body for sending: one plain packet when it fits `chunk` bytes, otherwise packets with
/// the subpackage item (total, index from 1) and consecutive serials starting at `header.serial`
/// (the session advances its counter by the number of packets). `chunk` is 1..=1023.
pub fn split_into_packets(header: &Header, body: &[u8], chunk: usize) -> Result<Vec<Packet>, EncodeError> {
    let bad = EncodeError::BadSplit { len: body.len(), chunk };
    if chunk == 0 || chunk > MAX_BODY_LEN {
        return Err(bad);
    }
    if body.len() <= chunk {
        let mut plain = *header;
        plain.subpackage = None;
        return Ok(vec![Packet {
            header: plain,
            body: Bytes::copy_from_slice(body),
        }]);
    }
    let total = u16::try_from(body.len().div_ceil(chunk)).map_err(|_| bad)?;
    body.chunks(chunk)
        .zip(1..=total)
        .map(|(piece, index)| {
            let mut packet_header = *header;
            packet_header.serial = header.serial.wrapping_add(index - 1);
            packet_header.subpackage = Some(Subpackage { total, index });
            Ok(Packet {
                header: packet_header,
                body: Bytes::copy_from_slice(piece),
            })
        })
        .collect()
}
