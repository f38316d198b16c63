//! scratch
use firstcome_sim::*;
fn main() {
    for shards in [1u32, 2, 3, 4, 8] {
        let s = Scenario {
            stock: 100,
            users: 500,
            attempts_per_s: 50.0,
            window_s: 6.0,
            containers: 2,
            hold_fraction: 0.25,
            ..Scenario::reference(shards)
        };
        let o = simulate(&s);
        println!("{shards}: {o:?} att {:.2}", o.attempts_per_issued());
    }
}
