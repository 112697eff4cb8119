package locality

import (
	"math/rand/v2"
	"sort"

	"github.com/federate/federate/registry/registrypb"
)

// usable reports whether an endpoint takes traffic: like Envoy and gRPC,
// an endpoint of unknown health is used.
func usable(h registrypb.Health) bool { return h != registrypb.Health_UNHEALTHY }

// Picker picks endpoints by priority load, locality weight, endpoint weight
// and health, as Envoy would for the same Priorities. It is immutable and
// safe for concurrent use; a change of health means a new Picker. Pick does
// not allocate.
type Picker struct {
	endpoints []Endpoint
	addrs     []string
	levelCum  []uint32 // cumulative priority load, 0..100
	levels    []pickLevel
}

// pickLevel is one priority flattened into a cumulative distribution over
// endpoint indexes: choosing an endpoint from it equals choosing a
// locality by effective weight and then an endpoint by weight.
type pickLevel struct {
	idx []int
	cum []float64
}

// NewPicker prepares a picker for a client's priorities.
func NewPicker(p Priorities) *Picker {
	pk := &Picker{}
	n := p.Levels()
	perLevel := make([][]Group, n)
	for _, g := range p.Groups {
		perLevel[g.Priority] = append(perLevel[g.Priority], g)
	}
	health := make([]LevelHealth, n)
	for i, groups := range perLevel {
		for _, g := range groups {
			h := levelHealth(g.Endpoints)
			health[i].Healthy += h.Healthy
			health[i].Total += h.Total
		}
	}
	over := p.Overprovisioning
	if over == 0 {
		over = DefaultOverprovisioning
	}
	load := PriorityLoad(health, over)
	panicked := make([]bool, n)
	allPanic := n > 0
	var normalized uint32
	for i := range health {
		normalized += HealthScore(health[i], over)
	}
	for i := range health {
		panicked[i] = normalized == 0 || inPanic(health[i], p.PanicThreshold)
		allPanic = allPanic && panicked[i]
	}
	if p.PanicThreshold == 0 {
		// Panic disabled: unhealthy endpoints are never used.
		clear(panicked)
		allPanic = false
	}
	if allPanic {
		load = panicLoad(health)
	}
	var cum uint32
	for i, groups := range perLevel {
		cum += load[i]
		pk.levelCum = append(pk.levelCum, cum)
		pk.levels = append(pk.levels, pk.flatten(groups, panicked[i], p.LocalityWeighted, over))
	}
	return pk
}

// flatten builds one level's distribution. In panic every endpoint is a
// candidate by weight; otherwise only usable ones, and with locality
// weighting each locality gets its effective share first.
func (pk *Picker) flatten(groups []Group, panicked, localityWeighted bool, over uint32) pickLevel {
	var lv pickLevel
	var shares []float64
	if localityWeighted && !panicked {
		shares = LocalityShares(groups, over)
	}
	var total float64
	for gi, g := range groups {
		var groupWeight float64
		for _, e := range g.Endpoints {
			if panicked || usable(e.Health) {
				groupWeight += float64(e.weight())
			}
		}
		for _, e := range g.Endpoints {
			if !panicked && !usable(e.Health) {
				continue
			}
			w := float64(e.weight())
			if shares != nil {
				if groupWeight == 0 || shares[gi] == 0 {
					continue
				}
				w = shares[gi] * w / groupWeight
			}
			total += w
			pk.endpoints = append(pk.endpoints, e)
			pk.addrs = append(pk.addrs, e.HostPort())
			lv.idx = append(lv.idx, len(pk.endpoints)-1)
			lv.cum = append(lv.cum, total)
		}
	}
	return lv
}

// Pick returns an endpoint, or false when none may take traffic.
func (pk *Picker) Pick() (*Endpoint, bool) {
	i := pk.pick()
	if i < 0 {
		return nil, false
	}
	return &pk.endpoints[i], true
}

// PickAddr is Pick returning "address:port".
func (pk *Picker) PickAddr() (string, bool) {
	i := pk.pick()
	if i < 0 {
		return "", false
	}
	return pk.addrs[i], true
}

func (pk *Picker) pick() int {
	if len(pk.levels) == 0 || pk.levelCum[len(pk.levelCum)-1] == 0 {
		return -1
	}
	r := uint32(rand.IntN(100))
	level := sort.Search(len(pk.levelCum), func(i int) bool { return pk.levelCum[i] > r })
	lv := &pk.levels[level]
	if len(lv.cum) == 0 {
		return -1
	}
	x := rand.Float64() * lv.cum[len(lv.cum)-1]
	j := sort.Search(len(lv.cum), func(i int) bool { return lv.cum[i] > x })
	if j == len(lv.cum) {
		j--
	}
	return lv.idx[j]
}

// Shares returns the exact fraction of picks each address receives, for
// status output and tests.
func (pk *Picker) Shares() map[string]float64 {
	out := make(map[string]float64)
	prev := uint32(0)
	for l, lv := range pk.levels {
		load := float64(pk.levelCum[l]-prev) / 100
		prev = pk.levelCum[l]
		if load == 0 || len(lv.cum) == 0 {
			continue
		}
		total := lv.cum[len(lv.cum)-1]
		last := 0.0
		for k, i := range lv.idx {
			out[pk.addrs[i]] += load * (lv.cum[k] - last) / total
			last = lv.cum[k]
		}
	}
	return out
}
