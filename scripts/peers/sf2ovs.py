#!/usr/bin/env python3
"""Translate a SoftFlow flow file (Pipeline A and the like) into OpenFlow
rules for Open vSwitch's userspace datapath with ct().

    scripts/peers/sf2ovs.py [--tcp-midstream loose|strict] [--allow-table N]
                            [--est-table M] FLOWS > ovs.flows
    ovs-ofctl -O OpenFlow15 add-flows BRIDGE ovs.flows

SoftFlow's flow syntax is ovs-ofctl's, except for the softflow:SERVICE:ARG
actions and the sf_* match fields.  Only the conntrack service is
translated (anything else is an error):

  ACL rule  ...,actions=softflow:conntrack:1 -> ...,actions=ct(commit,table=N)
                                                (strict: ct(table=N))
  default   ...,actions=softflow:conntrack:0 -> ...,actions=ct(table=M)
  stage 0   sf_stage=0,...                   -> the same rule without sf_stage
  post-ct   sf_stage=1,sf_action=conntrack,sf_metadata=1,actions=PASS
            sf_stage=1,sf_action=conntrack,sf_metadata=0,actions=FAIL
            -> the ct tables below, PASS for what conntrack lets through

Table N (the packet matched an allow rule: it may open a connection):
  loose (default): ct() has already committed the connection;
    +inv -> FAIL;  +est, +rel or +new -> PASS;  anything else -> FAIL.
    OVS picks up a TCP connection from any valid segment, not only a SYN.
  strict: ct() only looked the connection up;
    +inv -> FAIL;  +est or +rel -> PASS;
    +new TCP with SYN and without ACK -> ct(commit), PASS;  other +new TCP
    -> FAIL (SoftFlow's conntrack refuses mid-stream TCP it did not see
    open);  other +new -> ct(commit), PASS;  anything else -> FAIL.
    Costs a second ct() for every new connection -- and, in OVS's userspace
    datapath, loses connections when a SYN and the next packets of its
    connection share a receive batch and a megaflow: ct() gives all of them
    their state before the SYN's commit (a recirculation later) exists, so
    the handshake's ACK is "new without SYN" and dropped.  Replayed traces
    pack handshakes that tightly; a live network's round-trip time does not.
Table M (default: only existing connections):
  +est or +rel (and not +inv) -> PASS;  anything else -> FAIL.
N and M default to 3 and 4, which Pipeline A leaves free.

A match-all conntrack rule is split into an `ip` and an `ipv6` rule (OVS's
ct() needs an IP prerequisite); other packets miss the table and are dropped,
as SoftFlow's conntrack drops what it cannot track.  `goto_table` from a ct
table back to an earlier table (OpenFlow only allows forward gotos) becomes
`resubmit(,T)`.  Everything else (in_port, mod_dl_dst, output:N, drop) is
passed through: OVS spells it the same way.  Port numbers in output:N are
SoftFlow's; give the OVS ports the same numbers with ofport_request.

Prints the rules, one per line, and nothing else: the line count is the
number of rules OVS must hold (`ovs-ofctl dump-flows` checks it).  Python 3
standard library only.
"""
import argparse
import re
import sys

SF_FIELDS = ("sf_stage", "sf_action", "sf_metadata")


class TranslateError(Exception):
    pass


def split_top(text):
    """Splits TEXT at commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur or parts:
        parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


class Rule:
    def __init__(self, lineno, text):
        self.lineno = lineno
        self.text = text
        idx = text.find("actions=")
        if idx < 0:
            raise TranslateError(f"line {lineno}: no actions= in '{text}'")
        match_text = text[:idx].rstrip().rstrip(",")
        self.actions = split_top(text[idx + len("actions="):])
        self.table = 0
        self.priority = 32768  # OVS's default
        self.sf = {}
        self.match = []  # (name, value-or-None), in file order
        for item in split_top(match_text):
            name, eq, value = item.partition("=")
            name = name.strip()
            value = value.strip() if eq else None
            if name == "table":
                self.table = int(value, 0)
            elif name == "priority":
                self.priority = int(value, 0)
            elif name in SF_FIELDS:
                self.sf[name] = value
            elif name.startswith("sf_"):
                raise TranslateError(f"line {lineno}: SoftFlow field {name} has no OVS equivalent")
            else:
                self.match.append((name, value))

    def match_text(self):
        return ",".join(n if v is None else f"{n}={v}" for n, v in self.match)

    def has_ip_prerequisite(self):
        ip_names = {"ip", "ipv6", "tcp", "udp", "icmp", "sctp", "tcp6", "udp6", "icmp6", "sctp6"}
        for name, value in self.match:
            if name in ip_names:
                return True
            if name in ("dl_type", "eth_type") and value is not None and int(value, 0) in (0x0800, 0x86DD):
                return True
        return False


def format_rule(table, priority, match, actions):
    parts = [f"table={table}", f"priority={priority}"]
    if match:
        parts.append(match)
    return ",".join(parts) + ",actions=" + ",".join(actions)


def conntrack_arg(action):
    """1 or 0 for softflow:conntrack:ARG, None for a non-softflow action."""
    if not action.startswith("softflow:"):
        return None
    m = re.fullmatch(r"softflow:conntrack:([01])", action)
    if not m:
        raise TranslateError(f"action '{action}' has no OVS equivalent (only softflow:conntrack:0/1)")
    return int(m.group(1))


def read_rules(path):
    rules = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rules.append(Rule(lineno, line))
    return rules


def post_conntrack_actions(rules):
    """The PASS and FAIL action lists of the post-conntrack rules."""
    found = {}
    for r in rules:
        if r.sf.get("sf_stage", "0") == "0":
            continue
        if r.sf.get("sf_action") != "conntrack" or r.sf.get("sf_metadata") not in ("0", "1"):
            raise TranslateError(
                f"line {r.lineno}: only post-conntrack rules (sf_stage=1,sf_action=conntrack,"
                f"sf_metadata=0|1) can follow stage 0")
        if r.sf["sf_stage"] != "1":
            raise TranslateError(f"line {r.lineno}: only one service stage is supported")
        if r.match:
            raise TranslateError(
                f"line {r.lineno}: a post-conntrack rule matching more than the verdict "
                f"({r.match_text()}) is not supported")
        key = int(r.sf["sf_metadata"])
        if key in found:
            raise TranslateError(f"line {r.lineno}: a second post-conntrack rule for sf_metadata={key}")
        found[key] = r.actions
    if 1 not in found:
        raise TranslateError("no post-conntrack pass rule (sf_stage=1,sf_action=conntrack,sf_metadata=1)")
    return found[1], found.get(0, ["drop"])


def from_table(actions, table):
    """ACTIONS run in TABLE: a goto_table to TABLE or before becomes resubmit."""
    out = []
    for a in actions:
        m = re.fullmatch(r"goto_table:(\d+)", a)
        if m and int(m.group(1)) <= table:
            out.append(f"resubmit(,{m.group(1)})")
        else:
            out.append(a)
    return out


def translate(rules, allow_table, est_table, strict):
    used = {r.table for r in rules}
    for t, what in ((allow_table, "--allow-table"), (est_table, "--est-table")):
        if t in used:
            raise TranslateError(f"{what} {t} is already used by the flow file; pick another table")
        if not 0 <= t <= 253:
            raise TranslateError(f"{what} {t} is not an OpenFlow table (0..253)")
    if allow_table == est_table:
        raise TranslateError("--allow-table and --est-table must differ")
    uses_ct = any(conntrack_arg(a) is not None for r in rules for a in r.actions)
    out = []
    for r in rules:
        if r.sf.get("sf_stage", "0") != "0":
            continue  # post-conntrack: becomes the ct tables
        if set(r.sf) - {"sf_stage"}:
            raise TranslateError(f"line {r.lineno}: sf_action/sf_metadata only make sense after a service")
        actions = []
        ct = None
        for a in r.actions:
            arg = conntrack_arg(a)
            if arg is None:
                actions.append(a)
                continue
            if ct is not None:
                raise TranslateError(f"line {r.lineno}: two conntrack actions in one rule")
            ct = arg
            if arg == 1:
                actions.append(f"ct(table={allow_table})" if strict else f"ct(commit,table={allow_table})")
            else:
                actions.append(f"ct(table={est_table})")
        if ct is not None and conntrack_arg(r.actions[-1]) is None:
            raise TranslateError(f"line {r.lineno}: actions after softflow:conntrack never run")
        match = r.match_text()
        if ct is not None and not r.has_ip_prerequisite():
            for proto in ("ip", "ipv6"):
                out.append(format_rule(r.table, r.priority, ",".join(filter(None, (proto, match))), actions))
        else:
            out.append(format_rule(r.table, r.priority, match, actions))
    if not uses_ct:
        return out
    pass_actions, fail_actions = post_conntrack_actions(rules)

    def passed(table, commit=False):
        return (["ct(commit)"] if commit else []) + from_table(pass_actions, table)

    def failed(table):
        return from_table(fail_actions, table)

    n, m = allow_table, est_table
    out += [
        format_rule(n, 300, "ct_state=+trk+inv", failed(n)),
        format_rule(n, 200, "ct_state=+trk+est-inv", passed(n)),
        format_rule(n, 200, "ct_state=+trk+rel-inv", passed(n)),
    ]
    if strict:
        new = "ct_state=+trk+new-est-rel-inv"
        out += [
            format_rule(n, 150, f"{new},tcp,tcp_flags=+syn-ack", passed(n, True)),
            format_rule(n, 150, f"{new},tcp6,tcp_flags=+syn-ack", passed(n, True)),
            format_rule(n, 140, f"{new},tcp", failed(n)),
            format_rule(n, 140, f"{new},tcp6", failed(n)),
            format_rule(n, 100, f"{new},ip", passed(n, True)),
            format_rule(n, 100, f"{new},ipv6", passed(n, True)),
        ]
    else:
        out.append(format_rule(n, 190, "ct_state=+trk+new-inv", passed(n)))
    out += [
        format_rule(n, 0, "", failed(n)),
        format_rule(m, 300, "ct_state=+trk+inv", failed(m)),
        format_rule(m, 200, "ct_state=+trk+est-inv", passed(m)),
        format_rule(m, 200, "ct_state=+trk+rel-inv", passed(m)),
        format_rule(m, 0, "", failed(m)),
    ]
    return out


def main():
    ap = argparse.ArgumentParser(
        description="SoftFlow flow file -> Open vSwitch OpenFlow rules with ct() (see the module doc)")
    ap.add_argument("flows", help="SoftFlow flow file (e.g. from sf-pipegen --pipeline A)")
    ap.add_argument("--tcp-midstream", choices=("loose", "strict"), default="loose",
                    help="loose: allowed packets are committed in one ct() (OVS picks up "
                         "mid-stream TCP); strict: only SYNs open TCP connections, as in "
                         "SoftFlow (two ct() passes; see the module doc)")
    ap.add_argument("--allow-table", type=int, default=3,
                    help="table that ct() of an allow rule recirculates to (default 3)")
    ap.add_argument("--est-table", type=int, default=4,
                    help="table that ct() of the default rule recirculates to (default 4)")
    args = ap.parse_args()
    try:
        rules = read_rules(args.flows)
        if not rules:
            raise TranslateError("no rules in the file")
        out = translate(rules, args.allow_table, args.est_table, args.tcp_midstream == "strict")
    except (OSError, ValueError, TranslateError) as e:
        print(f"sf2ovs: {args.flows}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
