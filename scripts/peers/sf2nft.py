#!/usr/bin/env python3
"""Translate the ACL of a SoftFlow flow file (Pipeline A's table 2) into an
nftables ruleset for a Linux router with conntrack.

    scripts/peers/sf2nft.py [--table NAME] FLOWS > rules.nft
    nft -f rules.nft          (in the router's namespace; nft -c -f checks only)

The ruleset is one table (`ip NAME`, default softflow_peer) with a forward
chain, policy drop:

    ct state established,related accept
    ct state invalid drop
    <each allow rule>  ct state new accept     (in priority order)
    drop                                        (the default, counted)

An allow rule is a rule whose action is softflow:conntrack:1 (it may open a
connection); the default softflow:conntrack:0 (existing connections only) is
the first line and the policy.  Rules whose action is `drop` stay drops, in
their place; ARP (and other non-IPv4) rules are left out, as a router does
not forward ARP.  Every rule has a counter, so `nft list ruleset` shows what
matched.

Matches:  tcp / udp / icmp / ip,nw_proto=N  -> ip protocol ...
          nw_src=A/L, nw_dst=A/L (or A/MASK) -> ip saddr / ip daddr
          tp_src=V, tp_dst=V                 -> tcp|udp sport / dport V
          tp_dst=V/M (masked)                -> tcp|udp dport & M == V
Other fields (dl_*, in_port, sf_*) cannot be expressed on a router's forward
path: they are an error in a rule that is translated.  The file's other
tables (L2, L3, output) are the router's own job (routing, neighbours).

TCP: SoftFlow's conntrack refuses mid-stream TCP it has not seen open; set
net.netfilter.nf_conntrack_tcp_loose=0 in the namespace (linux.sh does) so
that the kernel marks such packets invalid instead of picking them up.
Python 3 standard library only.
"""
import argparse
import ipaddress
import re
import sys

from sf2ovs import split_top  # the same flow-line syntax

PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "sctp": "sctp"}


class TranslateError(Exception):
    pass


def parse_rule(lineno, text):
    idx = text.find("actions=")
    if idx < 0:
        raise TranslateError(f"line {lineno}: no actions= in '{text}'")
    rule = {"lineno": lineno, "table": 0, "priority": 32768, "match": [],
            "actions": split_top(text[idx + len("actions="):])}
    for item in split_top(text[:idx].rstrip().rstrip(",")):
        name, eq, value = item.partition("=")
        value = value.strip() if eq else None
        if name == "table":
            rule["table"] = int(value, 0)
        elif name == "priority":
            rule["priority"] = int(value, 0)
        else:
            rule["match"].append((name.strip(), value))
    return rule


def prefix(value, lineno):
    """nw_src/nw_dst value -> nft address text (a.b.c.d, a.b.c.d/len)."""
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        addr, _, mask = value.partition("/")
        try:
            a = int(ipaddress.IPv4Address(addr))
            m = int(ipaddress.IPv4Address(mask))
        except ValueError:
            raise TranslateError(f"line {lineno}: bad IPv4 address '{value}'") from None
        # A non-contiguous mask: nft can still say it.
        return None, (str(ipaddress.IPv4Address(m)), str(ipaddress.IPv4Address(a & m)))
    if net.prefixlen == 0:
        return "", None
    return (str(net.network_address) if net.prefixlen == 32 else str(net)), None


def port(proto, field, value, lineno):
    v, _, m = value.partition("/")
    try:
        v = int(v, 0)
        m = int(m, 0) if m else 0xFFFF
    except ValueError:
        raise TranslateError(f"line {lineno}: bad port '{value}'") from None
    if not (0 <= v <= 0xFFFF and 0 <= m <= 0xFFFF):
        raise TranslateError(f"line {lineno}: port '{value}' out of range")
    if m == 0:
        return ""
    if m == 0xFFFF:
        return f"{proto} {field} {v}"
    return f"{proto} {field} & 0x{m:04x} == {v & m}"


def translate_match(rule):
    """nft expressions for RULE's match, or None when the rule never sees an
    IPv4 packet (ARP, IPv6): such rules are left out."""
    lineno = rule["lineno"]
    proto = None
    exprs_addr, exprs_port = [], []
    fields = dict()
    for name, value in rule["match"]:
        if name in ("arp", "rarp", "ipv6", "tcp6", "udp6", "icmp6", "sctp6"):
            return None
        if name == "dl_type" and value is not None:
            if int(value, 0) != 0x0800:
                return None
            continue
        if name == "ip":
            continue
        if name in PROTOCOLS:
            proto = PROTOCOLS[name]
            continue
        if name == "nw_proto":
            n = int(value, 0)
            proto = {6: "tcp", 17: "udp", 1: "icmp", 132: "sctp"}.get(n, str(n))
            continue
        fields[name] = value
    for name, value in fields.items():
        if name in ("nw_src", "nw_dst"):
            direction = "saddr" if name == "nw_src" else "daddr"
            text, masked = prefix(value, lineno)
            if masked:
                exprs_addr.append(f"ip {direction} & {masked[0]} == {masked[1]}")
            elif text:
                exprs_addr.append(f"ip {direction} {text}")
        elif name in ("tp_src", "tp_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst"):
            if proto not in ("tcp", "udp", "sctp"):
                raise TranslateError(f"line {lineno}: {name} without tcp/udp")
            e = port(proto, "sport" if name.endswith("src") else "dport", value, lineno)
            if e:
                exprs_port.append(e)
        else:
            raise TranslateError(
                f"line {lineno}: match field '{name}' has no nftables equivalent on a router")
    exprs = []
    # `tcp dport` implies the protocol; say it only when there is no port.
    if proto is not None and not exprs_port:
        exprs.append(f"ip protocol {proto}")
    return exprs + exprs_addr + exprs_port


def acl_rules(rules):
    """The rules of the table(s) holding softflow:conntrack actions, by
    priority (highest first), file order within a priority."""
    tables = {r["table"] for r in rules
              if any(a.startswith("softflow:conntrack:") for a in r["actions"])}
    if not tables:
        raise TranslateError("no softflow:conntrack rules (no ACL to translate)")
    if len(tables) > 1:
        raise TranslateError(f"softflow:conntrack in more than one table ({sorted(tables)})")
    table = tables.pop()
    chosen = [r for r in rules if r["table"] == table]
    return table, sorted(chosen, key=lambda r: -r["priority"])  # sorted() is stable


def translate(rules, table_name):
    table, acl = acl_rules(rules)
    body = []
    n_allow = 0
    for r in acl:
        actions = r["actions"]
        match = translate_match(r)
        if match is None:
            continue
        if actions == ["softflow:conntrack:1"]:
            verdict = "ct state new counter accept"
            n_allow += 1
        elif actions == ["softflow:conntrack:0"]:
            # Existing connections only: the chain's first rule has already
            # accepted them, so what is left is dropped -- in place, as a
            # narrower conntrack:0 rule shadows the allow rules below it.
            if match:
                verdict = "counter drop"
            else:
                continue
        elif actions == ["drop"]:
            verdict = "counter drop"
        elif len(actions) == 1 and actions[0].startswith("goto_table:"):
            # A bypass of the firewall (ARP in Pipeline A) is left out for
            # IPv4: SoftFlow forwards it, a router would route it unfiltered.
            raise TranslateError(
                f"line {r['lineno']}: IPv4 rule bypassing conntrack ({','.join(actions)}) "
                f"is not translated")
        else:
            raise TranslateError(f"line {r['lineno']}: action '{','.join(actions)}' not translatable")
        body.append(" ".join(match + [verdict]) + f"  # line {r['lineno']}")
    lines = [
        f"# generated by scripts/peers/sf2nft.py from the ACL (table {table}): "
        f"{n_allow} allow rules",
        f"table ip {table_name}",
        f"delete table ip {table_name}",
        f"table ip {table_name} {{",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        "\t\tct state established,related counter accept",
        "\t\tct state invalid counter drop",
    ]
    lines += ["\t\t" + b for b in body]
    lines += ["\t\tcounter drop  # default: not allowed to open a connection", "\t}", "}"]
    return lines


def main():
    ap = argparse.ArgumentParser(
        description="SoftFlow flow file's ACL -> nftables forward chain with conntrack (see the module doc)")
    ap.add_argument("flows", help="SoftFlow flow file (e.g. from sf-pipegen --pipeline A)")
    ap.add_argument("--table", default="softflow_peer", help="nftables table name (default softflow_peer)")
    args = ap.parse_args()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.table):
        print(f"sf2nft: bad table name '{args.table}'", file=sys.stderr)
        return 2
    try:
        rules = []
        with open(args.flows, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    rules.append(parse_rule(lineno, line))
        out = translate(rules, args.table)
    except (OSError, ValueError, TranslateError) as e:
        print(f"sf2nft: {args.flows}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
