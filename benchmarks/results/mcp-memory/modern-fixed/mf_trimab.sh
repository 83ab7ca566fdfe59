#!/bin/bash
S=/tmp/mf_run.sh
$S main 1000 t1; $S branch 1000 t1; $S trim 1000 t1
$S trim 1000 t2; $S branch 1000 t2; $S main 1000 t2
$S main 10000 t3; $S trim 10000 t3
$S trim 10000 t4; $S main 10000 t4
echo TRIMDONE >> /tmp/mf_res/runs.txt
