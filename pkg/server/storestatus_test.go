package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gtun/gtun/pkg/store"
)

// gtund status shows the store: the file store's directory; etcd's
// endpoints, prefix, replica, since when it answers or not (and the cache
// serving meanwhile), revision and errors.
func TestStatusShowsTheStore(t *testing.T) {
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		st   store.Status
		want []string
	}{
		{store.Status{Backend: "file", Connected: true, CacheDir: "/var/lib/gtund"}, []string{"store: file (/var/lib/gtund)"}},
		{store.Status{Backend: "etcd", Endpoints: []string{"https://10.0.0.5:2379", "https://10.0.0.6:2379"}, Prefix: "/gtun/b", Replica: "gw-a",
			Connected: true, Since: since, Revision: 42, Errors: 1},
			[]string{"store: etcd https://10.0.0.5:2379,https://10.0.0.6:2379 prefix /gtun/b as replica gw-a", "connected since 2026-12-01T10:00:00Z", "revision 42", "errors 1"}},
		{store.Status{Backend: "etcd", Endpoints: []string{"http://10.0.9.1:2379"}, Prefix: "/gtun", Replica: "gw-b", Since: since, Revision: 7, Errors: 3,
			LastError: "etcd at http://10.0.9.1:2379 did not answer within 5s", CacheDir: "/var/lib/gtund/etcd-cache"},
			[]string{"UNREACHABLE since 2026-12-01T10:00:00Z (serving the cache in /var/lib/gtund/etcd-cache): etcd at http://10.0.9.1:2379 did not answer within 5s", "revision 7", "errors 3"}},
	} {
		raw, err := json.Marshal(Status{Store: c.st})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := WriteStatus(&out, raw); err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("status lacks %q:\n%s", w, out.String())
			}
		}
	}
}
