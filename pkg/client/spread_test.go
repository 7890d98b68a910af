package client

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gtun/gtun/pkg/secure"
)

// Spread order: over many clients each replica comes first about equally
// often, a client's order is stable, and when a replica goes only the
// clients that preferred it move.
func TestSpreadOrder(t *testing.T) {
	eps := []string{"198.51.100.2:9623", "198.51.100.4:9623", "198.51.100.5:9623"}
	const n = 9000
	first := map[string]int{}
	moved := 0
	// The alternative, a random order drawn at each start: as even, but a
	// restarted client changes replica 2 times in 3 (its old session's
	// state, the replica's subnet routes and its peer list entry move
	// with it for nothing), and a failed replica's return rebalances
	// nobody.
	randomMoves := 0
	for range n {
		k, err := secure.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		order := SpreadOrder(k.Public(), eps)
		if !slices.Equal(order, SpreadOrder(k.Public(), eps)) {
			t.Fatal("the order of one key changed")
		}
		if len(order) != len(eps) {
			t.Fatalf("order %v lost endpoints", order)
		}
		first[order[0]]++
		if eps[rand.IntN(len(eps))] != eps[rand.IntN(len(eps))] {
			randomMoves++
		}
		without := SpreadOrder(k.Public(), eps[1:]) // the first replica is gone
		if order[0] != eps[0] && without[0] != order[0] {
			moved++
		}
	}
	for _, ep := range eps {
		if c := first[ep]; c < n/3*9/10 || c > n/3*11/10 {
			t.Errorf("%s first for %d of %d clients, want about %d", ep, c, n, n/3)
		}
	}
	if moved != 0 {
		t.Errorf("%d clients of the remaining replicas moved when another replica went", moved)
	}
	t.Logf("first replica per endpoint of %d clients: %v; a restart moves 0 clients (a random order per start: %d, %.0f%%)",
		n, first, randomMoves, 100*float64(randomMoves)/n)
}
