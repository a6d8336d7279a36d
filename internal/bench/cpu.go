package bench

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/cputime"
)

// selfCPU returns the CPU time (user and system) this process has used so
// far: to the microsecond where [cputime.Process] reads it (the figures
// of a few milliseconds of work, a session's seal and open, need more
// than /proc's clock ticks), else as well as [processCPU] can tell.
func selfCPU() time.Duration {
	if d, ok := cputime.Process(); ok {
		return d
	}
	return processCPU(os.Getpid())
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU returns the CPU time (user + system) process pid has used so
// far, or 0 when it cannot be read (not Linux, or the process is gone).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from its
	// closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+k) * clockTick
}

// cpuMeter measures the CPU the stack's processes and this one use
// during a phase.
type cpuMeter struct {
	pids  []int
	names []string
	start []time.Duration
}

func (s *Stack) cpuMeter() *cpuMeter {
	m := &cpuMeter{pids: []int{os.Getpid()}, names: []string{"kez-bench"}}
	if s.NATSPID != 0 {
		m.pids, m.names = append(m.pids, s.NATSPID), append(m.names, "nats-server")
	}
	if s.ChatServerPID != 0 {
		m.pids, m.names = append(m.pids, s.ChatServerPID), append(m.names, "chat-server")
	}
	for _, p := range m.pids {
		m.start = append(m.start, processCPU(p))
	}
	return m
}

// used returns the CPU each process used since the meter started.
func (m *cpuMeter) used() []time.Duration {
	out := make([]time.Duration, len(m.pids))
	for i, p := range m.pids {
		out[i] = processCPU(p) - m.start[i]
	}
	return out
}
