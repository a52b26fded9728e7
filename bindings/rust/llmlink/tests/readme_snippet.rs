//! The README's "safe API in short" snippet, run as written.

use std::time::Duration;

use llmlink::{
    CacheDesc, CacheKey, ClusterInfo, DataDist, DataType, IpInfo, Options, Role, Status,
};

#[test]
fn the_readme_snippet_runs() -> Result<(), llmlink::Error> {
    let p = DataDist::new(Role::Prompt, 1)?;
    p.init(&Options::new().set("llm.listenIpInfo", "127.0.0.1:0"))?;
    let key = CacheKey::Blocks {
        prompt_cluster_id: 1,
        model_id: 0,
    };
    let desc = CacheDesc::new(4, DataType::Float16, vec![32, 16, 64]);
    let mut kv = p.cache_manager().allocate_blocks_cache(&desc, Some(&key))?;
    kv.tensor_mut(0)[..4].copy_from_slice(b"KV!!");

    let d = DataDist::new(Role::Decoder, 2)?;
    d.init(&Options::new())?;
    let prefill = ClusterInfo::new(1, IpInfo::new("127.0.0.1", p.listen_port(0)?));
    let (status, per_cluster) = d.link_clusters(&[prefill], Duration::from_secs(3))?;
    let mut mine = d.cache_manager().allocate_blocks_cache(&desc, None)?;
    d.cache_manager()
        .pull_blocks(&key, &mut mine, &[0, 5], &[0, 1], None)?;

    assert_eq!(
        (status, per_cluster),
        (Status::SUCCESS, vec![Status::SUCCESS])
    );
    assert_eq!(&mine.tensor(0)[..4], b"KV!!");
    Ok(())
}
