module rill/bench/loadgen

go 1.19
