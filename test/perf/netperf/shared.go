package main

import "github.com/berthdev/berth/test/perf/perfnet"

// The namespace, CNI, iperf3 and machine-description machinery lives in
// test/perf/perfnet, shared with the dataplane suite; these names keep
// netperf's code reading as before.

// nsPrefix names every network namespace this program creates. Only
// namespaces with this prefix are ever deleted, and the start-of-run sweep
// removes ones left behind by a run that was killed with SIGKILL.
const nsPrefix = "bperf-"

const netnsDir = perfnet.NetnsDir

type (
	env         = perfnet.Env
	plugin      = perfnet.Plugin
	cniCall     = perfnet.CNICall
	iperfSample = perfnet.IperfSample
	iperfServer = perfnet.IperfServer
	machineInfo = perfnet.Machine
)

var (
	nsPath         = perfnet.NSPath
	ipn            = perfnet.IPN
	nsExec         = perfnet.NSExec
	linkMTU        = perfnet.LinkMTU
	rootLinks      = perfnet.RootLinks
	firstIP        = perfnet.FirstIP
	withPrevResult = perfnet.WithPrevResult
	containerID    = perfnet.ContainerID
	mustJSON       = perfnet.MustJSON
	tail           = perfnet.Tail
	findBerth      = perfnet.FindBerth
	parseIperf     = perfnet.ParseIperf
	runIperfClient = perfnet.RunIperfClient
	retryable      = perfnet.Retryable
	displayArgs    = perfnet.DisplayArgs
	verdict        = perfnet.Verdict
	fptr           = perfnet.FPtr
)

// sweepStale removes bperf- namespaces left by an earlier run that could
// not clean up (SIGKILL, power loss).
func sweepStale(logf func(string, ...any)) { perfnet.SweepStale(nsPrefix, logf) }
