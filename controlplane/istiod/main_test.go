package istiod_test

import (
	"testing"

	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) { fedtest.Main(m) }
