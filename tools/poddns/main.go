// Command poddns is the tiny DNS server that plays kube-dns in gtun's test
// topology (and, in the tests, a VM's own upstream resolver).
//
//	poddns -listen :53 -record demo.default.svc.cluster.local=10.96.0.10 \
//		-record demo.default.svc.cluster.local=fd00:10:96::10
//
// It answers A and AAAA questions for the -record names (repeatable: a
// name's IPv4 addresses answer A, its IPv6 ones AAAA), PTR questions for
// their addresses' reverse names, and NXDOMAIN for
// everything else, over UDP and TCP, and logs one line per query with
// the client's address ("query demo.default.svc.cluster.local. A from
// 10.0.0.2:41234"), so a test can see where a query came from. It stops
// cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

type records map[string][]netip.Addr

func (r records) String() string { return fmt.Sprint(map[string][]netip.Addr(r)) }

func (r records) Set(s string) error {
	name, addr, ok := strings.Cut(s, "=")
	a, err := netip.ParseAddr(addr)
	if !ok || err != nil || a.Zone() != "" {
		return fmt.Errorf("want NAME=IPv4 or NAME=IPv6, not %q", s)
	}
	n := dns.CanonicalName(name)
	r[n] = append(r[n], a.Unmap())
	return nil
}

func main() {
	listen := flag.String("listen", ":53", "address to listen on (UDP and TCP)")
	recs := records{}
	flag.Var(recs, "record", "NAME=IPv4 or NAME=IPv6 to answer (repeatable)")
	flag.Parse()
	// Reverse lookups: each address's reverse name points at its names.
	ptr := map[string][]string{}
	for name, addrs := range recs {
		for _, a := range addrs {
			if rev, err := dns.ReverseAddr(a.String()); err == nil {
				ptr[rev] = append(ptr[rev], name)
			}
		}
	}

	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		m.Authoritative = true
		for _, q := range req.Question {
			log.Printf("query %s %s from %s", q.Name, dns.TypeToString[q.Qtype], w.RemoteAddr())
			if names, ok := ptr[dns.CanonicalName(q.Name)]; ok {
				for _, n := range names {
					if q.Qtype == dns.TypePTR {
						m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 30}, Ptr: n})
					}
				}
				continue
			}
			addrs, ok := recs[dns.CanonicalName(q.Name)]
			if !ok {
				m.Rcode = dns.RcodeNameError
				continue
			}
			for _, a := range addrs {
				hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 30}
				switch {
				case q.Qtype == dns.TypeA && a.Is4():
					hdr.Rrtype = dns.TypeA
					m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
				case q.Qtype == dns.TypeAAAA && a.Is6():
					hdr.Rrtype = dns.TypeAAAA
					m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
				}
			}
		}
		// Over UDP an answer is cut to what the client takes (512 bytes or
		// its EDNS0 size) with TC set, as a real DNS server does; the
		// client asks again over TCP.
		if w.RemoteAddr().Network() == "udp" {
			size := dns.MinMsgSize
			if o := req.IsEdns0(); o != nil {
				size = max(int(o.UDPSize()), dns.MinMsgSize)
			}
			m.Truncate(size)
		}
		if err := w.WriteMsg(m); err != nil {
			log.Printf("reply: %v", err)
		}
	})
	servers := []*dns.Server{{Addr: *listen, Net: "udp", Handler: h}, {Addr: *listen, Net: "tcp", Handler: h}}
	errc := make(chan error, len(servers))
	started := make(chan struct{}, len(servers))
	for _, s := range servers {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- s.ListenAndServe() }()
	}
	for range servers {
		select {
		case err := <-errc:
			log.Fatalf("poddns: %v", err)
		case <-started:
		}
	}
	log.Printf("poddns: listening on %s (udp, tcp), %d record(s)", *listen, len(recs))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	select {
	case err := <-errc:
		log.Fatalf("poddns: %v", err)
	case <-ctx.Done():
	}
	for _, s := range servers {
		_ = s.Shutdown()
	}
	log.Printf("poddns: stopped")
	os.Exit(0)
}
