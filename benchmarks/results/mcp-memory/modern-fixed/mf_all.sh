#!/bin/bash
S=/tmp/mf_run.sh
$S main 1000 p1; $S branch 1000 p1; $S branch 1000 p2; $S main 1000 p2
$S main 10000 x1; $S branch 10000 x1; $S branch 10000 x2; $S main 10000 x2
$S main 1000 p3; $S branch 1000 p3
echo ALLDONE >> /tmp/mf_res/runs.txt
