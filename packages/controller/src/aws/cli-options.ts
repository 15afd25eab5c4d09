/** The placement flags `spotctl prices` and `spotctl run --provider aws` share, as commander hands them over. */
export interface PlacementCliOptions {
  workers?: string;
  arm?: boolean;
  regions?: string;
  region?: string;
  families?: string;
  instanceType?: string;
  /** commander's `--no-ht` sets `ht: false`. */
  ht?: boolean;
  placementScores?: boolean;
}
