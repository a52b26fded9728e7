//go:build cgo

package llmlink

// The peer's commands for the asynchronous tests (the peer is the test
// binary as a child process, peer_test.go):
//
//	sum <A|B|C>                          SUM <crc32 of every tensor>
//	verifyt <A|B|C> <seed> <src> <dst> <first> <count>
//	                                     OK / BAD: checkUnits on tensors
//	                                     first..first+count-1 only
//	notify <cluster> <n> <prefix>        sends "<prefix>-0".."<prefix>-(n-1)":
//	                                     OK, or ERR <i> <status> <message>
//	notes <n> <timeout ms>               NOTES <id>:<data> ... (n of them,
//	                                     from Notifications), or TIMEOUT <got>
//	noteverify <seed> <src> <dst> <timeout ms>
//	                                     waits for one notification, then at
//	                                     once verifies cache B: NOTE <data> OK
//	                                     or NOTE <data> BAD ...

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
	"time"
)

// peerBlocksEnv sets the blocks of the peer's blocks caches A and B.
const peerBlocksEnv = "LLMLINK_GO_PEER_BLOCKS"

func peerBlocks() int64 {
	if v, err := strconv.ParseInt(os.Getenv(peerBlocksEnv), 10, 64); err == nil && v > 0 {
		return v
	}
	return testBlocks
}

func tensorsSum(c *Cache) uint32 {
	var s uint32
	for _, t := range allTensors(c) {
		s = crc32.Update(s, crc32.IEEETable, t)
	}
	return s
}

func peerAsyncCommand(e *Engine, caches map[string]*Cache, f []string) (string, bool) {
	switch {
	case len(f) == 2 && f[0] == "sum" && caches[f[1]] != nil:
		return fmt.Sprintf("SUM %08x", tensorsSum(caches[f[1]])), true
	case len(f) == 7 && f[0] == "verifyt" && caches[f[1]] != nil:
		c := caches[f[1]]
		seed, _ := strconv.ParseUint(f[2], 10, 64)
		first, _ := strconv.Atoi(f[5])
		n, _ := strconv.Atoi(f[6])
		if bad := checkUnits(allTensors(c)[first:first+n], c.Desc, seed, parseList(f[3]), parseList(f[4]), first); bad != "" {
			return "BAD " + bad, true
		}
		return "OK", true
	case len(f) == 4 && f[0] == "notify":
		id, _ := strconv.ParseUint(f[1], 10, 64)
		n, _ := strconv.Atoi(f[2])
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := e.Notify(ctx, id, []byte(fmt.Sprintf("%s-%d", f[3], i)))
			cancel()
			if err != nil {
				var le *Error
				if errors.As(err, &le) {
					return fmt.Sprintf("ERR %d %s %s", i, le.Status, le.Msg), true
				}
				return fmt.Sprintf("ERR %d %v", i, err), true
			}
		}
		return "OK", true
	case len(f) == 3 && f[0] == "notes":
		n, _ := strconv.Atoi(f[1])
		ms, _ := strconv.Atoi(f[2])
		var got []string
		deadline := time.After(time.Duration(ms) * time.Millisecond)
		for len(got) < n {
			select {
			case m := <-e.Notifications():
				got = append(got, fmt.Sprintf("%d:%s", m.ClusterID, m.Data))
			case <-deadline:
				return fmt.Sprintf("TIMEOUT %d %s", len(got), strings.Join(got, " ")), true
			}
		}
		return "NOTES " + strings.Join(got, " "), true
	case len(f) == 5 && f[0] == "noteverify":
		seed, _ := strconv.ParseUint(f[1], 10, 64)
		ms, _ := strconv.Atoi(f[4])
		select {
		case m := <-e.Notifications():
			c := caches["B"]
			if bad := checkUnits(allTensors(c), c.Desc, seed, parseList(f[2]), parseList(f[3]), 0); bad != "" {
				return fmt.Sprintf("NOTE %s BAD %s", m.Data, bad), true
			}
			return fmt.Sprintf("NOTE %s OK", m.Data), true
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return "TIMEOUT", true
		}
	}
	return "", false
}
