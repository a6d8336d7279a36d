package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

func groupClient(url, ip string) *group.Client { return group.NewClient(url, limittest.From(ip)) }

// TestGroupFlags runs the program with the group API's limits from flags
// and their environment twins: a second group of one person past
// --groups-per-key, appends past --group-appends-per-ip and reads past
// --group-reads-per-ip are refused with 429, a group of a domain outside
// --group-domains with 422, and /metrics counts each.
func TestGroupFlags(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "sig.db")
	url, _, logs := start(t, []string{"--listen", "127.0.0.1:0", "--groups-per-key", "1", "--group-appends-per-ip", "2/1h",
		"--group-domains", "kez.lat", "--trusted-proxies", "127.0.0.1,::1"},
		map[string]string{"KEZ_SIG_DB": db, "KEZ_SIG_GROUPS_PER_KEY": "50", "KEZ_SIG_GROUP_READS_PER_IP": "1/1m"})
	alice, bob := storetest.Identity(t, 1), storetest.Identity(t, 2)
	for id, handle := range map[*kez.Identity]string{alice: "alice@kez.lat", bob: "bob@other.example"} {
		_, l := eldestLink(t, id, handle)
		if err := clientFrom(url, "198.51.100.9").Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	create := func(id *kez.Identity, name, handle string) *group.Link {
		l, err := group.NewCreate(id, id.PublicKey(), name, handle, "", now)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	script := groupClient(url, "203.0.113.66")
	if err := script.Append(ctx, create(alice, "team@kez.lat", "alice@kez.lat")); err != nil {
		t.Fatal(err)
	}
	if err := script.Append(ctx, create(alice, "more@kez.lat", "alice@kez.lat")); !errors.Is(err, group.ErrTooManyGroups) {
		t.Fatalf("a second group past --groups-per-key 1 (the flag wins over the environment): %v", err)
	}
	if err := script.Append(ctx, create(alice, "more@kez.lat", "alice@kez.lat")); !errors.Is(err, group.ErrRateLimited) {
		t.Fatalf("a third append past --group-appends-per-ip 2/1h: %v", err)
	}
	other := groupClient(url, "198.51.100.1")
	if err := other.Append(ctx, create(bob, "team@other.example", "bob@other.example")); !errors.Is(err, group.ErrInvalid) {
		t.Fatalf("a group outside --group-domains: %v", err)
	}
	if _, _, err := other.Fetch(ctx, "team@kez.lat", 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Fetch(ctx, "team@kez.lat", 0); !errors.Is(err, group.ErrRateLimited) {
		t.Fatalf("a second read past KEZ_SIG_GROUP_READS_PER_IP 1/1m: %v", err)
	}
	m := metrics(t, url)
	for _, want := range []string{
		"kez_sig_group_links_stored_total 1",
		`kez_sig_group_refusals_total{reason="groups_per_key"} 1`,
		`kez_sig_group_refusals_total{reason="not_local"} 1`,
		`kez_http_limited_total{endpoint="group_append",reason="ip"} 1`,
		`kez_http_limited_total{endpoint="group_get",reason="ip"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, m)
		}
	}
	if !strings.Contains(logs.String(), "groups_per_key=1") || !strings.Contains(logs.String(), "group_domains=kez.lat") {
		t.Fatalf("the limits are not logged:\n%s", logs)
	}
}

// TestGroupFlagsRefused: values of the group flags that mean nothing are
// usage errors.
func TestGroupFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--groups-per-key", "0"},
		{"--groups-per-key", "-2"},
		{"--group-domains", "Kez.lat"},
		{"--group-domains", "kez.lat,not a domain"},
		{"--group-appends-per-ip", "often"},
	} {
		err := run(context.Background(), append([]string{"--db", filepath.Join(t.TempDir(), "sig.db")}, args...), func(string) string { return "" }, nil, &strings.Builder{}, nil)
		var ue servercmd.UsageError
		if !errors.As(err, &ue) {
			t.Fatalf("%q: %v", args, err)
		}
	}
}
