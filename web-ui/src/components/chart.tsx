// A live line chart (uPlot) that follows its container's width. The data is replaced
// in place on every refresh, so the chart never flickers or loses its cursor.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

import { formatClock } from '../format';
import type { Columns } from '../series';

export interface Line {
  label: string;
  color: string;
  /** Draw as steps (instance counts) rather than a slope. */
  stepped?: boolean;
  dash?: number[];
  /** Draw points only (rare events such as cold starts). */
  points?: boolean;
}

export interface ChartProps {
  title: string;
  /** What the latest values were, read out by screen readers and shown under the title. */
  summary: string;
  data: Columns;
  lines: Line[];
  format: (value: number) => string;
  /** The x range in seconds, so an empty or short series still spans the window. */
  range: [number, number];
}

/** Options read the latest props through `current`, so they never go stale. */
function options(current: { current: ChartProps }, width: number): uPlot.Options {
  const props = current.current;
  return {
    width,
    height: 170,
    padding: [8, 8, 0, 0],
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: {
      x: { time: true, range: () => current.current.range },
      y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
    },
    axes: [
      {
        stroke: '#5b6472',
        grid: { stroke: '#eef0f4' },
        ticks: { stroke: '#d9dde5' },
        // Time of day only: the window is at most 15 minutes.
        space: 90,
        values: (_u, splits) => {
          const step = splits.length > 1 ? splits[1] - splits[0] : 60;
          return splits.map((seconds) => formatClock(seconds * 1000).slice(0, step < 60 ? 8 : 5));
        },
      },
      {
        stroke: '#5b6472',
        grid: { stroke: '#eef0f4' },
        ticks: { stroke: '#d9dde5' },
        size: 72,
        values: (_u, values) => values.map((value) => current.current.format(value)),
      },
    ],
    series: [
      {},
      ...props.lines.map((line) => ({
        label: line.label,
        stroke: line.color,
        width: 2,
        dash: line.dash,
        spanGaps: false,
        paths: line.stepped ? uPlot.paths.stepped!({ align: 1 }) : undefined,
        points: line.points ? { show: true, size: 7, fill: line.color } : { show: false },
        value: (_u: uPlot, value: number | null) =>
          value === null || value === undefined ? '–' : current.current.format(value),
        ...(line.points ? { paths: () => null } : {}),
      })),
    ],
  };
}

export function Chart(props: ChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(props);
  latest.current = props;

  useEffect(() => {
    const element = container.current;
    if (!element) return;
    const width = () => Math.max(200, element.clientWidth);
    plot.current = new uPlot(options(latest, width()), latest.current.data as uPlot.AlignedData, element);
    const observer = new ResizeObserver(() => plot.current?.setSize({ width: width(), height: 170 }));
    observer.observe(element);
    return () => {
      observer.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [props.lines.length]);

  useEffect(() => {
    const chart = plot.current;
    if (!chart) return;
    // Rescales y to the new data; x follows the window through its range function.
    chart.setData(props.data as uPlot.AlignedData, true);
  }, [props.data, props.range[0], props.range[1]]);

  return (
    <figure class="chart" aria-label={`${props.title}: ${props.summary}`}>
      <figcaption>
        <span class="chart-title">{props.title}</span>
        <span class="chart-summary">{props.summary}</span>
      </figcaption>
      <div ref={container} class="chart-canvas" role="img" aria-label={`${props.title} over time`} />
    </figure>
  );
}
