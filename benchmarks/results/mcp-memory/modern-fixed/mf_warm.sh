#!/bin/bash
while ! grep -q PROBESDONE /tmp/mf/probes.txt; do sleep 5; done
S=/tmp/mf_run.sh
$S main 1000 w1 64; $S branch 1000 w1 64; $S branch 1000 w2 64; $S main 1000 w2 64
$S main 1000 p4; $S branch 1000 p4
$S branch 10000 w3 64; $S main 10000 w3 64
echo WARMDONE >> /tmp/mf_res/runs.txt
