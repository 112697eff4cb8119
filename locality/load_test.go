package locality

import (
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/federate/federate/registry/registrypb"
)

func TestPriorityLoad(t *testing.T) {
	tests := []struct {
		name   string
		levels []LevelHealth
		want   []uint32
	}{
		// Envoy's table: two levels, P1 fully healthy.
		{"100% healthy", []LevelHealth{{100, 100}, {100, 100}}, []uint32{100, 0}},
		{"80% healthy", []LevelHealth{{80, 100}, {100, 100}}, []uint32{100, 0}},
		{"72% healthy", []LevelHealth{{72, 100}, {100, 100}}, []uint32{100, 0}},
		{"71% healthy", []LevelHealth{{71, 100}, {100, 100}}, []uint32{99, 1}},
		{"50% healthy", []LevelHealth{{50, 100}, {100, 100}}, []uint32{70, 30}},
		{"25% healthy", []LevelHealth{{25, 100}, {100, 100}}, []uint32{35, 65}},
		{"0% healthy", []LevelHealth{{0, 100}, {100, 100}}, []uint32{0, 100}},
		{"small counts: 5 of 7 is 71%", []LevelHealth{{5, 7}, {3, 3}}, []uint32{100, 0}},
		{"small counts: 1 of 2", []LevelHealth{{1, 2}, {3, 3}}, []uint32{70, 30}},
		// Normalized: both levels 25% healthy split evenly.
		{"both 25% healthy", []LevelHealth{{25, 100}, {25, 100}}, []uint32{50, 50}},
		// Health 35/35/28 normalizes to 35/35/28 of 98; the rounding
		// leftover goes to the first level with health.
		{"three levels 25/25/20", []LevelHealth{{25, 100}, {25, 100}, {20, 100}}, []uint32{37, 35, 28}},
		{"skips an empty level", []LevelHealth{{0, 4}, {0, 0}, {4, 4}}, []uint32{0, 0, 100}},
		{"nothing healthy", []LevelHealth{{0, 4}, {0, 3}}, []uint32{0, 0}},
		{"no levels", nil, []uint32{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PriorityLoad(tt.levels, DefaultOverprovisioning)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("load (-want +got):\n%s", diff)
			}
		})
	}
}

// level builds one priority of n endpoints, the first healthy of them
// healthy, in one locality.
func level(prio uint32, l string, n, healthy int, first int) Group {
	g := Group{Locality: Locality{Region: l}, Priority: prio, Weight: uint32(n)}
	for i := 0; i < n; i++ {
		h := registrypb.Health_UNHEALTHY
		if i < healthy {
			h = registrypb.Health_HEALTHY
		}
		g.Endpoints = append(g.Endpoints, Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", prio, (first+i)/256, (first+i)%256), Port: 80, Health: h, Weight: 1})
	}
	return g
}

func levelShares(pk *Picker, prefix map[string]int) []float64 {
	out := make([]float64, 2)
	for addr, s := range pk.Shares() {
		out[prefix[addr[:4]]] += s
	}
	return out
}

func TestPickerSpillOver(t *testing.T) {
	for _, healthy := range []int{100, 80, 71, 50, 0} {
		t.Run(fmt.Sprintf("%d%% healthy", healthy), func(t *testing.T) {
			p := Priorities{
				Groups:         []Group{level(0, "a", 100, healthy, 0), level(1, "b", 100, 100, 0)},
				PanicThreshold: 0, // Istio's default with outlierDetection
			}
			pk := NewPicker(p)
			want := PriorityLoad([]LevelHealth{{healthy, 100}, {100, 100}}, DefaultOverprovisioning)
			got := levelShares(pk, map[string]int{"10.0": 0, "10.1": 1})
			for i := range want {
				if math.Abs(got[i]*100-float64(want[i])) > 1e-9 {
					t.Fatalf("shares %v, want %v percent", got, want)
				}
			}
			// Sampled picks agree with the exact shares.
			const n = 20000
			var p0 int
			for range n {
				e, ok := pk.Pick()
				if !ok {
					t.Fatal("no endpoint picked")
				}
				if e.Health == registrypb.Health_UNHEALTHY {
					t.Fatalf("picked unhealthy %s with panic disabled", e.HostPort())
				}
				if e.Address[:4] == "10.0" {
					p0++
				}
			}
			if d := math.Abs(float64(p0)/n*100 - float64(want[0])); d > 2 {
				t.Errorf("P0 got %.1f%% of picks, want %d%%", float64(p0)/n*100, want[0])
			}
		})
	}
}

func TestPickerPanic(t *testing.T) {
	// Envoy's default threshold 50: both levels below it, so load follows
	// host counts and unhealthy hosts are used.
	p := Priorities{Groups: []Group{level(0, "a", 10, 4, 0), level(1, "b", 30, 0, 0)}, PanicThreshold: 50}
	got := levelShares(NewPicker(p), map[string]int{"10.0": 0, "10.1": 1})
	if math.Abs(got[0]-0.25) > 1e-9 || math.Abs(got[1]-0.75) > 1e-9 {
		t.Errorf("panic shares %v, want [0.25 0.75] by host count", got)
	}
	// Panic disabled and nothing healthy: nothing to pick.
	p = Priorities{Groups: []Group{level(0, "a", 3, 0, 0)}, PanicThreshold: 0}
	if _, ok := NewPicker(p).Pick(); ok {
		t.Error("picked an endpoint with panic disabled and none healthy")
	}
	if _, ok := NewPicker(Priorities{}).PickAddr(); ok {
		t.Error("picked from an empty assignment")
	}
}

func TestLocalityShares(t *testing.T) {
	// Envoy's locality weight example: X weight 1, Y weight 2.
	x := level(0, "x", 2, 2, 0)
	y := level(0, "y", 2, 2, 2)
	x.Weight, y.Weight = 1, 2
	p := Priorities{Groups: []Group{x, y}, LocalityWeighted: true}
	share := func(p Priorities) float64 {
		var s float64
		for addr, v := range NewPicker(p).Shares() {
			if addr == x.Endpoints[0].HostPort() || addr == x.Endpoints[1].HostPort() {
				s += v
			}
		}
		return s
	}
	if got := share(p); math.Abs(got-1.0/3) > 1e-9 {
		t.Errorf("X share %.4f, want 1/3", got)
	}
	// X 50% healthy: 1*0.7 / (0.7 + 2) = 25.9%.
	p.Groups[0].Endpoints[1].Health = registrypb.Health_UNHEALTHY
	if got := share(p); math.Abs(got-0.7/2.7) > 1e-9 {
		t.Errorf("X share %.4f with half its hosts unhealthy, want %.4f", got, 0.7/2.7)
	}
	// Without locality weighting Envoy ignores locality weights: X's one
	// healthy host of three healthy hosts.
	p.LocalityWeighted = false
	if got := share(p); math.Abs(got-1.0/3) > 1e-9 {
		t.Errorf("X share %.4f unweighted, want 1/3", got)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	pk := NewPicker(Priorities{Groups: []Group{level(0, "a", 10, 5, 0), level(1, "b", 10, 10, 0)}, LocalityWeighted: true})
	if n := testing.AllocsPerRun(1000, func() { pk.PickAddr() }); n != 0 {
		t.Errorf("PickAddr allocates %.1f times per pick", n)
	}
}

func BenchmarkPick(b *testing.B) {
	pk := NewPicker(Priorities{Groups: []Group{level(0, "a", 50, 30, 0), level(1, "b", 50, 50, 0)}, LocalityWeighted: true})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pk.PickAddr()
		}
	})
}
