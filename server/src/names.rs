//! Random run names in MLflow's adjective-noun-number style (`brave-owl-417`).

use rand::Rng;
use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brave", "bright", "calm", "clever", "crisp", "daring", "eager", "gentle", "glowing",
    "golden", "grand", "honest", "humble", "jolly", "keen", "lively", "lucky", "merry", "mighty", "nimble",
    "noble", "polite", "proud", "quick", "quiet", "rare", "silent", "smooth", "steady", "sunny", "swift",
    "tidy", "vivid", "warm", "wise", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "ant", "bass", "bear", "bee", "cat", "colt", "crab", "crane", "deer", "dove", "eel", "finch", "fox",
    "frog", "gnat", "goat", "hare", "hawk", "heron", "ibis", "jay", "kite", "lark", "lynx", "mole", "moth",
    "newt", "owl", "panda", "pike", "quail", "ram", "robin", "seal", "shrew", "slug", "swan", "toad",
    "trout", "whale", "wolf", "wren", "yak",
];

pub fn random_run_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("quiet");
    let noun = NOUNS.choose(&mut rng).copied().unwrap_or("owl");
    format!("{adjective}-{noun}-{}", rng.random_range(0..1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let name = super::random_run_name();
        assert_eq!(name.split('-').count(), 3, "{name}");
    }
}
