// TCP connection tracking: a state machine per connection with each peer's
// sequence progress, and window validation in the style of pf (Guido van
// Rooij's "Real Stateful TCP Packet Filtering in IP Filter") as also used
// by Open vSwitch's userspace conntrack.
//
// For each peer we keep
//   seq_end  the highest sequence end it has sent (seq + len, SYN/FIN count 1),
//   seq_max  the highest end it may reach: the other side's ack + window,
//   max_win  the largest window it advertised (bytes, after scaling).
// A segment from 'src' to 'dst' is acceptable when
//   (1) end <= src.seq_max                  it stays inside the window dst granted;
//   (2) seq >= src.seq_end - dst.max_win    it is at most one window old
//                                           (retransmissions are fine);
//   (3) ack <= dst.seq_end                  it acknowledges nothing dst never sent;
//   (4) ack >= dst.seq_end - max(src.max_win, kMaxAckWindow)
//                                           and is not hopelessly stale.
// An unacceptable segment changes nothing: an RST far outside the window
// neither passes nor closes the connection.
//
// Window scaling (RFC 7323) applies only when both SYNs offered it; windows
// in SYN segments are never scaled.  A connection picked up mid-stream (the
// loose policy) has not seen the SYNs, so it assumes the largest scale for
// both sides, as Open vSwitch does, and skips the checks against a side it
// has not heard from yet.
#include <algorithm>

#include "conntrack.h"
#include "softflow/packet_builder.h"  // TcpFlags

namespace softflow::conntrack {
namespace {

// pf's MAXACKWINDOW: slack for ACKs and for peers we know little about.
constexpr uint32_t kMaxAckWindow = 65535 + 1500;
constexpr uint8_t kMaxWscale = 14;
// Windows are capped below half the sequence space so the modular
// comparisons stay meaningful.
constexpr uint64_t kMaxSpan = 1u << 30;

inline bool seq_geq(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) >= 0; }
inline bool seq_gt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

inline uint32_t span(uint64_t v) {
  return static_cast<uint32_t>(std::clamp<uint64_t>(v, 1, kMaxSpan));
}

constexpr uint16_t kTcpCheckedFlags = kTcpFin | kTcpSyn | kTcpRst | kTcpPsh | kTcpAck | kTcpUrg;

uint32_t segment_end(const TcpSegment& seg) {
  uint32_t end = seg.seq + seg.length;
  if (seg.flags & kTcpSyn) ++end;
  if (seg.flags & kTcpFin) ++end;
  return end;
}

// The first segment of the responder in a connection opened by a SYN: a
// SYN+ACK or an RST+ACK acknowledging exactly the originator's SYN.
bool valid_answer_to_syn(const TcpConn& conn, Dir dir, const TcpSegment& seg) {
  const TcpPeer& originator = conn.peer[static_cast<int>(flip(dir))];
  if (!(seg.flags & kTcpAck) || seg.ack != originator.seq_end) return false;
  return (seg.flags & kTcpSyn) || (seg.flags & kTcpRst);
}

// Records a peer's first segment.
void start_peer(TcpConn& conn, Dir dir, const TcpSegment& seg) {
  TcpPeer& src = conn.peer[static_cast<int>(dir)];
  const TcpPeer& dst = conn.peer[static_cast<int>(flip(dir))];
  const uint32_t end = segment_end(seg);
  if (seg.flags & kTcpSyn) {
    src.wscale_offered = seg.wscale >= 0;
    src.wscale = static_cast<uint8_t>(std::max<int16_t>(seg.wscale, 0));
    src.state = TcpPeerState::kSynSent;
    src.max_win = std::max<uint32_t>(seg.window, 1);  // SYN windows are not scaled
  } else {
    src.state = (seg.flags & kTcpFin) ? TcpPeerState::kFinSent : TcpPeerState::kEstablished;
    src.max_win = span(static_cast<uint64_t>(seg.window) << src.wscale);
  }
  src.seq_end = end;
  // Until the other side grants a window, src may send what dst's SYN
  // window allows (nothing more than its SYN when dst is still unheard).
  src.seq_max = end + std::max<uint32_t>(dst.max_win, 1);
}

}  // namespace

bool tcp_flags_valid(uint16_t flags) {
  const uint16_t f = flags & kTcpCheckedFlags;
  // A SYN neither finishes nor resets: SYN+FIN and SYN+RST are scans or worse.
  if (f & kTcpSyn) return (f & (kTcpFin | kTcpRst)) == 0;
  // Every other segment acknowledges something or resets (so no flags at all
  // is invalid) ...
  if ((f & (kTcpAck | kTcpRst)) == 0) return false;
  // ... and only an RST may come without ACK, alone.
  if ((f & kTcpAck) == 0 && (f & (kTcpFin | kTcpPsh | kTcpUrg)) != 0) return false;
  return true;
}

bool tcp_is_opening_syn(uint16_t flags) {
  return (flags & (kTcpSyn | kTcpAck | kTcpRst | kTcpFin)) == kTcpSyn;
}

bool tcp_can_pick_up(uint16_t flags) {
  return tcp_flags_valid(flags) && (flags & kTcpAck) && !(flags & (kTcpSyn | kTcpRst));
}

void tcp_start(TcpConn& conn, const TcpSegment& seg, bool midstream) {
  conn = TcpConn{};
  conn.midstream = midstream;
  if (midstream) {
    conn.scaling = true;
    conn.peer[0].wscale = conn.peer[1].wscale = kMaxWscale;
  }
  start_peer(conn, Dir::kOrig, seg);
}

TcpVerdict tcp_update(TcpConn& conn, Dir dir, const TcpSegment& seg) {
  if (!tcp_flags_valid(seg.flags)) return TcpVerdict::kInvalidFlags;
  TcpPeer& src = conn.peer[static_cast<int>(dir)];
  TcpPeer& dst = conn.peer[static_cast<int>(flip(dir))];
  const bool syn = seg.flags & kTcpSyn;
  const bool ack = seg.flags & kTcpAck;

  if (src.state == TcpPeerState::kNone) {
    // The first segment from the responder (or from the far side of a
    // picked-up connection).
    if (!conn.midstream) {
      if (!valid_answer_to_syn(conn, dir, seg)) return TcpVerdict::kRefused;
      if (syn && seg.wscale >= 0 && dst.wscale_offered) conn.scaling = true;
      if (syn && !conn.scaling) dst.wscale = 0;
    } else if (!tcp_can_pick_up(seg.flags)) {
      return TcpVerdict::kRefused;
    }
    start_peer(conn, dir, seg);
    if (!conn.scaling) src.wscale = 0;
  } else {
    const uint32_t end = segment_end(seg);
    const bool dst_unheard = dst.state == TcpPeerState::kNone;
    if (dst_unheard && !conn.midstream) {
      // Handshake, no answer yet: the originator may only repeat its SYN
      // or give up with an RST; there is nothing it could acknowledge.
      if (!syn && !(seg.flags & kTcpRst)) return TcpVerdict::kRefused;
    }
    if (!dst_unheard || !conn.midstream) {
      const bool in_window = seq_geq(src.seq_max, end) &&                        // (1)
                             seq_geq(seg.seq, src.seq_end - span(dst.max_win));  // (2)
      if (!in_window) return TcpVerdict::kOutOfWindow;
      if (ack && !dst_unheard) {
        const bool ack_ok =
            seq_geq(dst.seq_end, seg.ack) &&  // (3)
            seq_geq(seg.ack,
                    dst.seq_end - span(std::max<uint64_t>(src.max_win, kMaxAckWindow)));  // (4)
        if (!ack_ok) return TcpVerdict::kOutOfWindow;
      }
    }
    if (syn && src.state >= TcpPeerState::kEstablished) {
      // A SYN in an open connection: only a retransmission (same end) is harmless.
      if (end != src.seq_end) return TcpVerdict::kOutOfWindow;
    }
    const uint64_t win =
        syn || !conn.scaling ? seg.window : static_cast<uint64_t>(seg.window) << src.wscale;
    src.max_win = std::max(src.max_win, span(win));
    if (seq_gt(end, src.seq_end)) src.seq_end = end;
    if ((seg.flags & kTcpFin) && src.state < TcpPeerState::kFinSent)
      src.state = TcpPeerState::kFinSent;
  }

  // What this segment acknowledges moves the other side along.
  if (ack && dst.state != TcpPeerState::kNone) {
    const uint64_t win =
        syn || !conn.scaling ? seg.window : static_cast<uint64_t>(seg.window) << src.wscale;
    const uint32_t granted = seg.ack + span(win);
    if (seq_gt(granted, dst.seq_max)) dst.seq_max = granted;
    if (seq_geq(seg.ack, dst.seq_end)) {
      if (dst.state == TcpPeerState::kSynSent) dst.state = TcpPeerState::kEstablished;
      if (dst.state == TcpPeerState::kFinSent) dst.state = TcpPeerState::kFinAcked;
    }
  }
  if (seg.flags & kTcpRst) conn.reset = true;
  return TcpVerdict::kPass;
}

TcpState tcp_state(const TcpConn& conn) {
  using P = TcpPeerState;
  if (conn.reset) return TcpState::kClosed;
  const P orig = conn.peer[0].state;
  const P reply = conn.peer[1].state;
  if (orig >= P::kFinAcked && reply >= P::kFinAcked) return TcpState::kTimeWait;
  if (orig >= P::kFinSent && reply >= P::kFinSent)
    return orig == P::kFinAcked || reply == P::kFinAcked ? TcpState::kLastAck : TcpState::kClosing;
  if (orig >= P::kFinSent) return TcpState::kFinWait;
  if (reply >= P::kFinSent) return TcpState::kCloseWait;
  if (orig == P::kEstablished &&
      (reply == P::kEstablished || (conn.midstream && reply == P::kNone)))
    return TcpState::kEstablished;
  if (reply != P::kNone) return TcpState::kSynRecv;
  return TcpState::kSynSent;
}

bool tcp_reusable(const TcpConn& conn) {
  const TcpState s = tcp_state(conn);
  return s == TcpState::kTimeWait || s == TcpState::kClosed;
}

std::string_view tcp_state_name(TcpState s) {
  switch (s) {
    case TcpState::kSynSent:
      return "SYN_SENT";
    case TcpState::kSynRecv:
      return "SYN_RECV";
    case TcpState::kEstablished:
      return "ESTABLISHED";
    case TcpState::kFinWait:
      return "FIN_WAIT";
    case TcpState::kCloseWait:
      return "CLOSE_WAIT";
    case TcpState::kClosing:
      return "CLOSING";
    case TcpState::kLastAck:
      return "LAST_ACK";
    case TcpState::kTimeWait:
      return "TIME_WAIT";
    case TcpState::kClosed:
      return "CLOSED";
  }
  return "?";
}

TimeoutClass tcp_timeout_class(TcpState s) {
  switch (s) {
    case TcpState::kSynSent:
      return TimeoutClass::kTcpSynSent;
    case TcpState::kSynRecv:
      return TimeoutClass::kTcpSynRecv;
    case TcpState::kEstablished:
      return TimeoutClass::kTcpEstablished;
    case TcpState::kFinWait:
    case TcpState::kCloseWait:
    case TcpState::kClosing:
    case TcpState::kLastAck:
      return TimeoutClass::kTcpFinWait;
    case TcpState::kTimeWait:
      return TimeoutClass::kTcpTimeWait;
    case TcpState::kClosed:
      return TimeoutClass::kTcpClosed;
  }
  return TimeoutClass::kTcpClosed;
}

}  // namespace softflow::conntrack
