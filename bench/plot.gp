# bench/plot.gp: the benchmark's plots, drawn by bench/run.sh in the results
# folder from the data files bench/report.py writes there:
#   latency.png    per-token latency of each configuration, I/O and compute
#   bandwidth.png  the disk's read bandwidth against read size, per queue depth
set terminal pngcairo size 900,540 font ",11" noenhanced

set output "latency.png"
set title "Per generated token: I/O and compute (SYNTHETIC-weight model)"
set ylabel "ms / token"
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.6
set key top right
set grid ytics
set yrange [0:*]
plot "latency.dat" using 2:xtic(1) title "I/O" lc rgb "#d95f02", \
     "" using 3 title "compute" lc rgb "#1b9e77"

# no device curve in this run (--configs without device): no bandwidth plot
if (system("test -s bandwidth.dat && echo 1 || echo 0") + 0 == 0) exit

reset
set output "bandwidth.png"
set title "Random O_DIRECT reads of ffn.bin: bandwidth against read size"
set xlabel "read size (KiB)"
set ylabel "MB/s"
set logscale x 2
set grid
set key top left
ncol = int(system("awk 'NR == 1 { print NF }' bandwidth.dat"))
plot for [i=2:ncol] "bandwidth.dat" using 1:i with linespoints lw 2 pt 7 title columnheader(i)
