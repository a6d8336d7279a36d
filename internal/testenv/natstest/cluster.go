package natstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ClusterSize is the number of nodes [StartCluster] runs: the smallest
// cluster that keeps a JetStream quorum (2 of 3) when one node is down.
const ClusterSize = 3

// clusterReadyTimeout bounds how long a cluster may take to elect its
// JetStream meta leader. Raft elections in nats-server wait 4–9 s.
const clusterReadyTimeout = 60 * time.Second

// Cluster is a 3-node nats-server cluster with JetStream, each node a
// separate process ([Process]) on loopback ports with its own store. Its
// methods are safe for concurrent use; every node is stopped in t.Cleanup.
type Cluster struct {
	t     testing.TB
	nodes []*Process
	names []string
}

// StartCluster runs a 3-node JetStream cluster as separate nats-server
// processes. Each node gets its own configuration file: a server name
// (n0, n1, n2), a cluster block naming the other nodes' route ports, and
// then extraConf (for instance accounts or an authorization/auth_callout
// block; it must not contain server_name, cluster or jetstream, which
// StartCluster sets). Client, monitor and route ports are free loopback
// ports; each node's JetStream store is in its own t.TempDir().
//
// The nodes start at once (none can be healthy alone: clustered JetStream
// needs a meta leader, which needs a quorum); StartCluster returns when
// every node's /healthz answers 200 and /jsz reports a meta leader, and
// fails the test otherwise. Leader elections take seconds, so tests that
// use a cluster should skip under -short.
func StartCluster(t testing.TB, extraConf string) *Cluster {
	t.Helper()
	bin := ServerBinary(t)
	routePorts := make([]int, ClusterSize)
	for i := range routePorts {
		routePorts[i] = FreePort(t)
	}
	routes := make([]string, ClusterSize)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	c := &Cluster{t: t}
	for i := range ClusterSize {
		name := fmt.Sprintf("n%d", i)
		conf := fmt.Sprintf(`server_name: %q
cluster {
  name: "kez-test"
  listen: "127.0.0.1:%d"
  routes: [%s]
}
%s
`, name, routePorts[i], strings.Join(routes, ", "), extraConf)
		dir := t.TempDir()
		p := &Process{
			t:           t,
			bin:         bin,
			confPath:    WriteConfig(t, conf),
			storeDir:    filepath.Join(dir, "store"),
			logPath:     filepath.Join(dir, "nats-server.log"),
			port:        FreePort(t),
			monitorPort: FreePort(t),
		}
		t.Cleanup(p.cleanup)
		c.nodes = append(c.nodes, p)
		c.names = append(c.names, name)
	}
	errs := make([]error, ClusterSize)
	var wg sync.WaitGroup
	for i, p := range c.nodes {
		wg.Go(func() { errs[i] = p.start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("natstest: starting the cluster: %v", err)
	}
	if _, err := c.waitMetaLeader(clusterReadyTimeout); err != nil {
		t.Fatal(err)
	}
	return c
}

// Node returns node i (0, 1 or 2).
func (c *Cluster) Node(i int) *Process { return c.nodes[i] }

// Name returns node i's server name ("n0", "n1", "n2").
func (c *Cluster) Name(i int) string { return c.names[i] }

// ClientURLs returns every node's client URL, comma-separated, as
// nats.Connect takes them: a client connected this way fails over to
// another node when its node goes down.
func (c *Cluster) ClientURLs() string {
	urls := make([]string, len(c.nodes))
	for i, p := range c.nodes {
		urls[i] = p.ClientURL()
	}
	return strings.Join(urls, ",")
}

// KillNode ends node i with SIGKILL, as a crash would, and waits for the
// process to exit. The other two nodes keep the quorum; streams whose
// leader was on node i elect a new one within seconds.
func (c *Cluster) KillNode(i int) { c.nodes[i].Kill() }

// RestartNode starts node i again (stopping it first if it runs) with the
// same configuration, ports and store, and returns once the node is
// healthy: it has a meta leader and its streams have caught up.
func (c *Cluster) RestartNode(i int) {
	c.t.Helper()
	c.nodes[i].Restart()
}

// MetaLeader returns the server name of the current JetStream meta
// leader, waiting up to a minute for one to be elected (after a node was
// killed, for instance). It asks the nodes' /jsz monitor endpoints.
func (c *Cluster) MetaLeader() string {
	c.t.Helper()
	name, err := c.waitMetaLeader(clusterReadyTimeout)
	if err != nil {
		c.t.Fatal(err)
	}
	return name
}

// waitMetaLeader polls /jsz on the running nodes until one reports a meta
// leader that is a running node. Polling is the only way to observe
// another process's election.
func (c *Cluster) waitMetaLeader(timeout time.Duration) (string, error) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for i, p := range c.nodes {
			if !p.running() {
				continue
			}
			leader, err := metaLeader(client, p.MonitorURL()+"/jsz")
			if err != nil {
				last = fmt.Errorf("node %s: %w", c.names[i], err)
				continue
			}
			for j, q := range c.nodes {
				if c.names[j] == leader && q.running() {
					return leader, nil
				}
			}
			last = fmt.Errorf("node %s reports meta leader %q, which is not running", c.names[i], leader)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("natstest: no JetStream meta leader after %s: %v", timeout, last)
		}
		<-tick.C
	}
}

func metaLeader(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s answered %s", url, resp.Status)
	}
	var jsz struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&jsz); err != nil {
		return "", fmt.Errorf("reading %s: %w", url, err)
	}
	if jsz.Meta == nil || jsz.Meta.Leader == "" {
		return "", errors.New("no meta leader yet")
	}
	return jsz.Meta.Leader, nil
}

// running reports whether the process is started and has not been
// stopped or killed through its methods.
func (p *Process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
