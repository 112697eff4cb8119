package main

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// CLI calls against a hub frozen by SIGSTOP (its port accepts connections,
// nothing answers) end within seconds with a message that says the hub
// does not answer and what to check, instead of gRPC's 20 s handshake
// timeout.
func TestCLIAgainstFrozenHub(t *testing.T) {
	t.Parallel()
	h := startHubProcess(t)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	token, err := h.federate(ctx, "token", "create", "--cluster", "north")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.Fields(token)[0]

	h.signal(t, syscall.SIGSTOP)
	calls := map[string]func() error{
		"status":         func() error { _, err := h.federate(ctx, "status"); return err },
		"token create":   func() error { _, err := h.federate(ctx, "token", "create", "--cluster", "east"); return err },
		"cluster remove": func() error { _, err := h.federate(ctx, "cluster", "remove", "east"); return err },
		"join": func() error {
			return run(ctx, []string{"join", "--token", token, "--data-dir", t.TempDir()}, &lockedBuffer{}, &lockedBuffer{})
		},
	}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := call()
			took := time.Since(start)
			switch {
			case err == nil:
				t.Errorf("%s against a frozen hub succeeded", name)
			case !strings.Contains(err.Error(), "the hub at "+h.Addr+" does not answer"):
				t.Errorf("%s against a frozen hub: %q does not say that the hub at %s does not answer", name, err, h.Addr)
			case !strings.Contains(err.Error(), "stopped"):
				t.Errorf("%s against a frozen hub: %q does not say what to check", name, err)
			}
			if took > membership.AnswerTimeout+3*time.Second {
				t.Errorf("%s against a frozen hub took %s, want about %s", name, took.Round(time.Millisecond), membership.AnswerTimeout)
			}
			t.Logf("%s against a frozen hub: %s after %s", name, err, took.Round(time.Millisecond))
		}()
	}
	wg.Wait()

	// Resumed, the same hub answers: the failures were the freeze.
	h.signal(t, syscall.SIGCONT)
	if _, err := h.federate(ctx, "status"); err != nil {
		t.Fatalf("status after the hub resumed: %v", err)
	}
}
