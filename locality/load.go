package locality

// LevelHealth counts the hosts of one priority level.
type LevelHealth struct {
	Healthy, Total int
}

// HealthScore is Envoy's integer health of a level: min(100,
// overprovisioning * healthy / total), with overprovisioning in percent
// (140 for Envoy's default factor 1.4). An empty level scores 0.
func HealthScore(l LevelHealth, overprovisioning uint32) uint32 {
	if l.Total <= 0 || l.Healthy <= 0 {
		return 0
	}
	h := min(l.Healthy, l.Total)
	return uint32(min(100, uint64(overprovisioning)*uint64(h)/uint64(l.Total)))
}

// PriorityLoad returns the percent of requests each priority level
// receives, by Envoy's algorithm (LoadBalancerBase::recalculatePerPriorityState):
// a level keeps min(100, 1.4 x healthy%) scaled by the normalized total
// health, the rest spills to the next levels, and rounding leftovers go to
// the first level with any health. The loads sum to 100, or are all 0 when
// no level has a healthy host.
func PriorityLoad(levels []LevelHealth, overprovisioning uint32) []uint32 {
	load := make([]uint32, len(levels))
	health := make([]uint32, len(levels))
	var sum uint32
	for i, l := range levels {
		health[i] = HealthScore(l, overprovisioning)
		sum += health[i]
	}
	normalized := min(100, sum)
	if normalized == 0 {
		return load
	}
	remaining := uint32(100)
	first := -1
	for i, h := range health {
		if first < 0 && h > 0 {
			first = i
		}
		load[i] = min(remaining, h*100/normalized)
		remaining -= load[i]
	}
	load[first] += remaining
	return load
}

// inPanic is Envoy's isHostSetInPanic: the raw healthy percentage, without
// overprovisioning, is below the threshold.
func inPanic(l LevelHealth, threshold uint32) bool {
	if l.Total == 0 {
		return threshold > 0
	}
	return 100*float64(l.Healthy)/float64(l.Total) < float64(threshold)
}

// panicLoad is Envoy's recalculateLoadInTotalPanic: when every level is in
// panic, load follows host counts, not health.
func panicLoad(levels []LevelHealth) []uint32 {
	load := make([]uint32, len(levels))
	total := 0
	for _, l := range levels {
		total += l.Total
	}
	if total == 0 {
		return load
	}
	remaining := uint32(100)
	first := -1
	for i, l := range levels {
		if first < 0 && l.Total > 0 {
			first = i
		}
		load[i] = uint32(100 * l.Total / total)
		remaining -= load[i]
	}
	load[first] += remaining
	return load
}

// LocalityShares returns each group's share of its priority level's load
// (the groups must share one priority), by Envoy's locality-weighted rule:
// effective weight = weight x min(1, overprovisioning x healthy/total).
func LocalityShares(groups []Group, overprovisioning uint32) []float64 {
	out := make([]float64, len(groups))
	var sum float64
	for i, g := range groups {
		h := levelHealth(g.Endpoints)
		if h.Total == 0 {
			continue
		}
		avail := min(1, float64(overprovisioning)/100*float64(h.Healthy)/float64(h.Total))
		out[i] = float64(g.Weight) * avail
		sum += out[i]
	}
	if sum == 0 {
		return out
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func levelHealth(eps []Endpoint) LevelHealth {
	var h LevelHealth
	for i := range eps {
		h.Total++
		if usable(eps[i].Health) {
			h.Healthy++
		}
	}
	return h
}
